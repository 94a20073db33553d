"""Platform connectors, each implementing :class:`bot.connector.Connector`.

Each subpackage is the only importer of its platform's SDK; :mod:`bot.main` builds the ones whose
credentials are configured.
"""
