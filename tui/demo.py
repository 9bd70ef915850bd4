"""Record the README screenshot: a real run of the TUI, headless, against a scripted model.

``python -m rlm.tui.demo docs/tui.svg [--png docs/tui.png]`` asks a question about
``examples/logbook.txt``; the scripted model (:class:`rlm.testing.ScriptedServer`
on loopback) splits the logbook into chunks and fans them out to sub-agents with
``rlm_query_batched``; the code runs in the real sandbox and the run is logged in a
temporary ``RLM_HOME``. When the run has finished, the first sub-agent is selected
and the screen is saved as SVG (and PNG when ``cairosvg`` is installed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlm.config import RLMConfig
from rlm.prompts import task_index
from rlm.testing import ScriptedServer

QUESTION = "On how many days was the trawler Marigold sighted?"


def _block(code: str) -> str:
    return f"```repl\n{code}\n```"


def policy(messages: list[dict[str, Any]]) -> str:
    """The scripted model: the root fans out over chunks, each sub-agent counts in its chunk."""
    index = task_index(messages) or 0
    task = str(messages[index].get("content")) if messages else ""
    turn = sum(1 for m in messages[index:] if m.get("role") == "assistant")
    if "Count the days" in task:
        if turn == 0:
            return _block("days = [line[:10] for line in context.splitlines() if 'Marigold' in line]\n"
                          "print(len(days), 'days, first', days[:2])")
        return _block("FINAL(str(len(days)))")
    if turn == 0:
        return _block("size = 70_000\nchunks = [context[i:i + size] for i in range(0, len(context), size)]\n"
                      "counts = rlm_query_batched(['Count the days the trawler Marigold was sighted'] * len(chunks),"
                      " chunks)\nprint(counts)")
    return _block("total = sum(int(c) for c in counts)\n"
                  "FINAL(f'The trawler **Marigold** was sighted on **{total} days** '\n"
                  "      f'({\" + \".join(counts)} over {len(counts)} chunks of the logbook).')")


async def record(document: Path, svg: Path, size: tuple[int, int] = (140, 42)) -> None:
    """Run the app headless against the scripted model and save the finished screen to ``svg``."""
    from rlm.tui.app import RLMApp
    from rlm.tui.history import QuestionHistory
    from rlm.tui.widgets import SwarmTree

    with tempfile.TemporaryDirectory() as home, ScriptedServer(policy=policy) as server:
        config = RLMConfig(model="openai/scripted", api_base=server.base_url, api_key="sk-demo", home=Path(home))
        app = RLMApp(config, document, memory=None, history=QuestionHistory(None))
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.5)
            app.ask(QUESTION)
            while app.running:
                await pilot.pause(0.1)
            tree = app.query_one(SwarmTree)
            tree.focus()
            children = app.state.children(app.state.root_id) if app.state.root_id else []
            if children:
                tree.move_cursor(tree.node_for(children[0]))
            await pilot.pause(0.5)
            svg.parent.mkdir(parents=True, exist_ok=True)
            app.save_screenshot(svg.name, path=str(svg.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("svg", type=Path)
    parser.add_argument("--png", type=Path, help="also write a PNG (needs cairosvg)")
    parser.add_argument("--document", type=Path, default=Path("examples/logbook.txt"))
    args = parser.parse_args(argv)
    asyncio.run(record(args.document, args.svg))
    print(f"wrote {args.svg}")
    if args.png:
        try:
            import cairosvg
        except ImportError:
            print("cairosvg is not installed: pip install cairosvg (PNG skipped)", file=sys.stderr)
            return 1
        cairosvg.svg2png(url=str(args.svg), write_to=str(args.png), output_width=1600)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
