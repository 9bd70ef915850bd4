"""Generate examples/logbook.txt: a lighthouse keeper's logbook (deterministic, seed 7).

About 2,000 daily entries (~250 KB, ~60k tokens: far beyond the 8k-token window of
the embedded demo model). One entry, deep inside, records the harbour launch code.
"""

import random
from datetime import date, timedelta
from pathlib import Path

WEATHER = ["calm seas", "light fog", "heavy rain", "north-westerly gale", "clear skies", "drizzle and haze"]
SHIPS = ["the trawler Marigold", "a coal barge", "the ferry Saint Ives", "two fishing smacks", "the cutter Osprey"]
TASKS = ["cleaned the lens", "trimmed the wicks", "painted the gallery rail", "oiled the clockwork",
         "mended the fog bell rope", "logged the barometer", "restocked the paraffin store"]


def entry(rng: random.Random, day: date) -> str:
    return (f"{day.isoformat()} - Weather: {rng.choice(WEATHER)}. Sighted {rng.choice(SHIPS)} at "
            f"{rng.randint(1, 12)} o'clock. Keeper {rng.choice(['Hale', 'Morrow', 'Penn'])} "
            f"{rng.choice(TASKS)}. Lamp lit at {rng.randint(16, 19)}:{rng.randint(0, 59):02d}.\n")


def main() -> None:
    rng = random.Random(7)
    day = date(1901, 1, 1)
    lines = []
    for index in range(2000):
        lines.append(entry(rng, day))
        if index == 1337:
            lines.append(f"{day.isoformat()} - Note: the harbour master's launch code is ORCA-7731. "
                         "Keep it in the locked drawer.\n")
        day += timedelta(days=1)
    Path(__file__).with_name("logbook.txt").write_text("".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
