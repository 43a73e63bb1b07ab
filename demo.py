"""See the transfer work on any machine: the demo workflow, run headless by ComfyUI's own executor.

    python -m eye_for_an_eye.demo --out demo.png

Loads ComfyUI (``COMFYUI_PATH``, else the ComfyUI this pack is installed in, else
``~/comfy/ComfyUI``), its built-in nodes and this pack, turns
``example_workflows/appearance_transfer_demo.json`` into a prompt exactly as the frontend
would, runs it with ``execution.PromptExecutor`` and writes the side-by-side picture
(target | reference | result | ideal, the last drawn by the renderer: what a perfect transfer
looks like) to ``--out``. The demo model ships with the pack and the
images are drawn by Eye Demo Scene: nothing is downloaded, no GPU is needed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parent
DEMO_WORKFLOW = PACK_DIR / "example_workflows" / "appearance_transfer_demo.json"
SCENE_NODE = "EyeForAnEye_DemoScene"
RESULT_TITLE = "target | reference | result | ideal"


def build_prompt(workflow_path: Path, seed, category, species) -> dict:
    """The API-format prompt of a UI workflow, as the frontend would queue it, with the scene's overrides."""
    from .comfy_adapter import headless
    from .eye_demo import workflow_api

    workflow = workflow_api.load_workflow(workflow_path)
    types = {node["type"] for node in workflow["nodes"]}
    prompt = workflow_api.to_api_prompt(workflow, headless.object_info(types))
    overrides = {k: v for k, v in (("seed", seed), ("category", category), ("species", species)) if v is not None}
    if overrides:
        workflow_api.apply_overrides(prompt, {SCENE_NODE: overrides})
    return prompt


def check_out(path: Path, parser) -> None:
    """Fail now, not after the run, when the picture cannot be written where asked."""
    if path.is_dir():
        parser.error(f"--out {path}: that is a folder; give a file path such as {path / 'eye_demo.png'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".eye-demo-"):
            pass
    except OSError as error:
        parser.error(f"--out {path}: cannot write there ({error.strerror or error}); give a file path in a folder "
                     "you can write to")


def main(argv=None) -> Path:
    from .eye_demo.pairs import SCENE_CATEGORIES, SPECIES_CHOICES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="eye_demo.png", help="where to write target | reference | result | ideal (PNG)")
    parser.add_argument("--seed", type=int, default=None, help="another demo pair (Eye Demo Scene's seed, 0 or more)")
    parser.add_argument("--category", default=None, choices=SCENE_CATEGORIES, metavar="CATEGORY",
                        help="the kind of pair (default flipped): " + ", ".join(repr(c) for c in SCENE_CATEGORIES))
    parser.add_argument("--species", default=None, choices=SPECIES_CHOICES, help="bird (default), fish or random")
    parser.add_argument("--workflow", default=str(DEMO_WORKFLOW), help="a UI workflow to run instead")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is present")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed {args.seed}: a seed is 0 or more")
    out = Path(args.out).resolve()
    check_out(out, parser)

    started = time.monotonic()
    from .comfy_adapter import bootstrap

    root = bootstrap.find_comfyui()
    with tempfile.TemporaryDirectory(prefix="eye-demo-") as scratch:
        scratch = Path(scratch)
        bootstrap.import_comfyui(root, cpu=True if args.cpu else None, output_dir=scratch)
        from .comfy_adapter import headless
        from .eye_demo import workflow_api

        # ComfyUI's built-in nodes load quietly; the pack after them with warnings on. If the workflow
        # needs a built-in node that did not load, the user is told which module failed and why.
        failures = headless.load_nodes(PACK_DIR)
        if SCENE_NODE not in headless.node_types():
            raise SystemExit(f"the pack's demo nodes did not load from {PACK_DIR}; see the messages above")
        needed = {node["type"] for node in workflow_api.load_workflow(Path(args.workflow))["nodes"]}
        failures.check(needed - set(workflow_api.FRONTEND_ONLY_TYPES))
        prompt = build_prompt(Path(args.workflow), args.seed, args.category, args.species)
        outputs = headless.run(prompt, args.quiet)
        saved = [node_id for node_id, node in prompt.items()
                 if (node.get("_meta") or {}).get("title") == RESULT_TITLE and outputs.get(node_id, {}).get("images")]
        if not saved:
            raise SystemExit(f"the workflow has no output node titled {RESULT_TITLE!r} that saved an image")
        entry = outputs[saved[0]]["images"][0]
        source = scratch / ("temp" if entry.get("type") == "temp" else "") / entry.get("subfolder", "") / entry["filename"]
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out)
    if not args.quiet:
        print(f"wrote {out} (target | reference | result | ideal) in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
