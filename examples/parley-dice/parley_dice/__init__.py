"""An example third-party Parley plugin: ``/roll`` and ``/coin``.

Installed as a package, it is found through its ``parley.plugins`` entry point. Its settings come
from ``PARLEY_PLUGINS__DICE__MAX_DICE`` (default 10).
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from bot.plugin import Arg, Invocation, Plugin, Router


class DiceSettings(BaseModel):
    max_dice: int = Field(10, ge=1, le=100)


router = Router()


@router.command(description="Roll dice, e.g. /roll 3 6", cooldown=2)
async def roll(
    inv: Invocation,
    count: Annotated[int, Arg("how many dice", min=1, max=100)] = 1,
    sides: Annotated[int, Arg("faces per die", min=2, max=1000)] = 6,
) -> str:
    settings: DiceSettings = inv.settings
    if count > settings.max_dice:
        return f"At most {settings.max_dice} dice at once."
    rolls = [random.randint(1, sides) for _ in range(count)]
    return f"{inv.user_name or inv.user} rolled {' + '.join(map(str, rolls))} = {sum(rolls)}"


@router.command(description="Flip a coin and call it")
async def coin(inv: Invocation, call: Annotated[Literal["heads", "tails"], Arg("your call")]) -> str:
    side = random.choice(["heads", "tails"])
    return f"{side.capitalize()}! You {'win' if side == call else 'lose'}."


plugin = Plugin(
    name="dice",
    description="Dice and coins for games",
    version="1.0.0",
    router=router,
    settings_model=DiceSettings,
)
