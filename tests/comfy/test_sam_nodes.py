"""Load SAM-HQ Model and SAM-HQ Segment in-process against the real ComfyUI (random-weight vit_tiny, CPU).

Each test gets its own temporary ``models`` directory: ``folder_paths.models_dir`` points
there and the ``sams`` folder name is unregistered first, so the pack's registration
(and, in one test, an extra_model_paths.yaml) is exercised as in a fresh ComfyUI.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

import folder_paths  # noqa: E402
from eye_test_support import comfy_env, tiny_sam  # noqa: E402

from eye_for_an_eye import nodes as pack_nodes  # noqa: E402
from eye_for_an_eye.eye_core.masks import PromptError, sam_masks  # noqa: E402
from eye_for_an_eye.nodes import sam as sam_nodes  # noqa: E402

if not tiny_sam.sam_hq_available():
    pytest.skip("segment-anything-hq / timm not installed", allow_module_level=True)

EXPECTED_FILES = ("sam_hq_vit_tiny.pth", "sam_hq_vit_b.pth", "sam_hq_vit_l.pth", "sam_hq_vit_h.pth")


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def isolate_sams(monkeypatch, models_dir: Path):
    """A fresh folder_paths state for "sams": models_dir moved, the name unregistered, no cached lists."""
    models_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(folder_paths, "models_dir", str(models_dir))
    monkeypatch.delitem(folder_paths.folder_names_and_paths, "sams", raising=False)
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    isolate_sams(monkeypatch, tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture
def checkpoint(models_dir):
    """sam_hq_vit_tiny.pth (random weights) in <tmp>/models/sams."""
    return tiny_sam.write_checkpoint(models_dir / "sams")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A vit_tiny SAM-HQ loaded through the loader node (shared by the Segment tests)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        models = tmp_path_factory.mktemp("sam_models") / "models"
        isolate_sams(monkeypatch, models)
        tiny_sam.write_checkpoint(models / "sams")
        (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth",
                        architecture=sam_nodes.AUTO_ARCHITECTURE, device="auto")
    return handle


def fast_encoder(monkeypatch, handle, seed=0):
    """Replace the TinyViT encoder (4 s per image on one CPU thread) by random embeddings of its shapes."""
    generator = torch.Generator().manual_seed(seed)
    calls = []

    dtype = handle.dtype

    def forward(x):
        calls.append(tuple(x.shape))
        return (torch.randn(1, 256, 64, 64, generator=generator).to(dtype),
                [torch.randn(1, 64, 64, 160, generator=generator).to(dtype)])

    monkeypatch.setattr(handle.model.image_encoder, "forward", forward)
    return calls


def picture(batch=1, height=96, width=128, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def segment(handle, image, boxes="", positive="", negative="", hq=True):
    return run(sam_nodes.SAMHQSegment, sam_model=handle, image=image, boxes=boxes, positive_points=positive,
               negative_points=negative, hq_token_only=hq)


# ------------------------------------------------------------------ registration and schema

def test_nodes_are_registered_with_stable_ids_names_and_tooltips(models_dir):
    classes = pack_nodes.load_node_classes()
    assert sam_nodes.LoadSAMHQModel in classes and sam_nodes.SAMHQSegment in classes
    loader, segmenter = sam_nodes.LoadSAMHQModel.define_schema(), sam_nodes.SAMHQSegment.define_schema()
    assert (loader.node_id, loader.display_name) == ("EyeForAnEye_LoadSAMHQModel", "Load SAM-HQ Model (Eye-for-an-eye)")
    assert (segmenter.node_id, segmenter.display_name) == ("EyeForAnEye_SAMHQSegment",
                                                           "SAM-HQ Segment (Eye-for-an-eye)")
    for schema in (loader, segmenter):
        assert schema.category == "Eye-for-an-eye" and schema.description
        for item in list(schema.inputs) + list(schema.outputs):
            assert item.tooltip, f"{schema.node_id}: {item} has no tooltip"
    assert loader.outputs[0].io_type == "EYE_SAM_MODEL" and segmenter.inputs[0].io_type == "EYE_SAM_MODEL"
    assert [o.io_type for o in segmenter.outputs] == ["MASK", "MASK", "IMAGE"]
    assert [i.id for i in segmenter.inputs] == ["sam_model", "image", "boxes", "positive_points", "negative_points",
                                               "hq_token_only", "keep_inside_boxes"]
    assert segmenter.inputs[-2].default is True and segmenter.inputs[-1].default is False
    # V1 view (what /object_info serves) builds too
    assert "checkpoint" in sam_nodes.LoadSAMHQModel.INPUT_TYPES()["required"]


def test_checkpoint_list_shows_a_placeholder_until_a_file_is_there(models_dir):
    options = sam_nodes.LoadSAMHQModel.define_schema().inputs[0].options
    assert options == [sam_nodes.NO_CHECKPOINT]
    assert folder_paths.get_folder_paths("sams") == [str(models_dir / "sams")]
    tiny_sam.write_checkpoint(models_dir / "sams")
    (models_dir / "sams" / "README.txt").write_text("not a model")
    options = sam_nodes.LoadSAMHQModel.define_schema().inputs[0].options
    assert options == ["sam_hq_vit_tiny.pth"]


def test_a_sams_folder_of_extra_model_paths_yaml_is_searched(models_dir, tmp_path):
    from utils.extra_config import load_extra_path_config

    elsewhere = tmp_path / "shared" / "segmenters"
    tiny_sam.write_checkpoint(elsewhere, name="my_light_hq_sam_vit_t.pth")
    (elsewhere / "notes.txt").write_text("not a model")
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {tmp_path / 'shared'}\n  sams: segmenters\n", encoding="utf-8")
    load_extra_path_config(str(yaml))  # ComfyUI reads the yaml before custom nodes load
    assert sam_nodes.LoadSAMHQModel.define_schema().inputs[0].options == ["my_light_hq_sam_vit_t.pth"]
    assert set(folder_paths.get_folder_paths("sams")) == {str(elsewhere), str(models_dir / "sams")}
    (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="my_light_hq_sam_vit_t.pth",
                    architecture=sam_nodes.AUTO_ARCHITECTURE, device="CPU")
    assert handle.architecture == "vit_tiny"


# ------------------------------------------------------------------ loading

def test_missing_checkpoint_error_names_the_folder_the_files_and_the_download(models_dir):
    with pytest.raises(FileNotFoundError) as info:
        run(sam_nodes.LoadSAMHQModel, checkpoint=sam_nodes.NO_CHECKPOINT, architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="auto")
    message = str(info.value)
    assert str(models_dir / "sams") in message
    assert all(name in message for name in EXPECTED_FILES)
    assert "https://huggingface.co/lkeab/hq-sam" in message and "Light HQ-SAM" in message
    assert "extra_model_paths.yaml" in message
    print(message)
    with pytest.raises(FileNotFoundError, match=r"'sam_hq_vit_l.pth' was not found in the sams model folder"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_l.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="auto")


def test_loads_on_the_cpu_with_map_location_in_fp32(checkpoint, monkeypatch):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    for device in ("auto", "CPU"):
        (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth",
                        architecture=sam_nodes.AUTO_ARCHITECTURE, device=device)
        assert handle.architecture == "vit_tiny" and handle.dtype == torch.float32
        assert handle.compute_device.type == "cpu" and handle.offload_device.type == "cpu"
        tensors = list(handle.model.parameters()) + list(handle.model.buffers())
        assert {t.device.type for t in tensors} == {"cpu"}
        assert {t.dtype for t in handle.model.parameters()} == {torch.float32}
        assert not any(p.requires_grad for p in handle.model.parameters()) and not handle.model.training
        import comfy.model_patcher

        assert isinstance(handle.patcher, comfy.model_patcher.ModelPatcher)  # ComfyUI's memory manager holds it
    assert len(seen) == 2 and all(str(k["map_location"]) == "cpu" and k["weights_only"] is True for k in seen)
    expected = tiny_sam.tiny_sam_state_dict(0)
    loaded = handle.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_gpu_is_refused_on_a_cpu_only_host(checkpoint):
    with pytest.raises(RuntimeError, match=r"device 'GPU' was chosen but ComfyUI computes on the CPU.*'auto' or 'CPU'"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="GPU")


def test_architecture_override_and_mismatches(models_dir):
    sams = models_dir / "sams"
    tiny_sam.write_checkpoint(sams, name="renamed.pth")
    (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="renamed.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
                    device="CPU")
    assert handle.architecture == "vit_tiny"  # read from the weights
    (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="renamed.pth", architecture="vit_tiny", device="CPU")
    assert handle.architecture == "vit_tiny"
    with pytest.raises(ValueError, match=r"holds vit_tiny weights but the architecture is vit_b"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="renamed.pth", architecture="vit_b", device="CPU")
    plain = {k: v for k, v in tiny_sam.tiny_sam_state_dict(0).items() if "hf_" not in k}
    torch.save(plain, sams / "sam_vit_t_original.pth")
    with pytest.raises(ValueError, match=r"is not a SAM-HQ checkpoint"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="sam_vit_t_original.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="CPU")


def test_missing_libraries_are_named_with_the_pip_command(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything_hq", None)
    with pytest.raises(ImportError, match=r"segment-anything-hq is missing.*pip install segment-anything-hq timm"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="auto")
    # timm: segment_anything_hq imports it at import time
    for name in [n for n in sys.modules if n.split(".")[0] in ("segment_anything_hq", "timm")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r"timm is missing.*pip install segment-anything-hq timm"):
        run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth", architecture=sam_nodes.AUTO_ARCHITECTURE,
            device="auto")
    # every other family still loads (the SAM nodes too: they only import the library when used)
    ids = {cls.define_schema().node_id for cls in pack_nodes.load_node_classes()}
    assert {"EyeForAnEye_InvertLatent", "EyeForAnEye_TrajectorySampler", "EyeForAnEye_LoadSAMHQModel",
            "EyeForAnEye_SAMHQSegment"} <= ids


def test_the_pack_imports_and_lists_its_nodes_in_a_python_without_the_sam_libraries(tmp_path):
    """A fresh interpreter where segment_anything_hq and timm cannot be imported at all."""
    repo = Path(__file__).resolve().parents[2]
    script = textwrap.dedent(f"""
        import importlib.util, sys
        for name in ("segment_anything_hq", "timm"):
            sys.modules[name] = None
        sys.path.insert(0, {str(repo / "tests" / "support")!r})
        from eye_test_support import comfy_env
        comfy_env.import_comfy()
        spec = importlib.util.spec_from_file_location("eye_for_an_eye", {str(repo / "__init__.py")!r},
                                                      submodule_search_locations=[{str(repo)!r}])
        pack = importlib.util.module_from_spec(spec)
        sys.modules["eye_for_an_eye"] = pack
        spec.loader.exec_module(pack)
        from eye_for_an_eye import nodes
        classes = nodes.load_node_classes()
        for cls in classes:
            cls.INPUT_TYPES()
        print("IDS", sorted(c.define_schema().node_id for c in classes))
        from eye_for_an_eye.nodes import sam
        try:
            sam.LoadSAMHQModel.execute(checkpoint="x.pth", architecture=sam.AUTO_ARCHITECTURE, device="auto")
        except ImportError as error:
            print("ERROR", error)
    """)
    env = dict(os.environ, COMFYUI_PATH=str(comfy_env.comfyui_path()), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-4000:]
    ids_line = next(line for line in done.stdout.splitlines() if line.startswith("IDS"))
    for node in ("InvertLatent", "TrajectorySampler", "ExtractUNetFeatures", "LoadSAMHQModel", "SAMHQSegment"):
        assert f"EyeForAnEye_{node}" in ids_line, ids_line
    assert "disabled" not in done.stderr, done.stderr[-4000:]
    error_line = next(line for line in done.stdout.splitlines() if line.startswith("ERROR"))
    assert "pip install segment-anything-hq timm" in error_line


# ------------------------------------------------------------------ segmenting

def test_segment_a_batch_with_two_boxes_one_reaching_outside(loaded, monkeypatch):
    """The real encoder: shapes, dtypes, range, layout, clipping, progress and loading through ComfyUI."""
    import comfy.model_management

    from eye_for_an_eye.comfy_adapter import sam_models

    loads, updates, prompts_seen = [], [], []
    real_load = comfy.model_management.load_models_gpu

    def load_models_gpu(models, memory_required=0, **kwargs):
        loads.append((models, memory_required))
        return real_load(models, memory_required=memory_required, **kwargs)

    class Bar:
        def __init__(self, total):
            updates.append(("total", total))

        def update(self, n):
            updates.append(n)

    def spy_masks(module, image, prompts, **kwargs):
        prompts_seen.append(prompts)
        return sam_masks(module, image, prompts, **kwargs)

    monkeypatch.setattr(sam_models.comfy.model_management, "load_models_gpu", load_models_gpu)
    monkeypatch.setattr(sam_nodes, "progress_bar", Bar)
    monkeypatch.setattr(sam_nodes, "sam_masks", spy_masks)
    image = picture(batch=2)
    masks, merged, preview = segment(loaded, image, boxes="8,8,72,64\n-40,30,300,90")
    assert masks.shape == (4, 96, 128) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert merged.shape == (2, 96, 128) and merged.dtype == torch.float32
    assert torch.equal(merged[0], torch.maximum(masks[0], masks[1]))
    assert torch.equal(merged[1], torch.maximum(masks[2], masks[3]))
    assert preview.shape == (2, 96, 128, 3) and preview.dtype == torch.float32
    assert preview.min() >= 0 and preview.max() <= 1
    assert prompts_seen[0].boxes.tolist() == [[8, 8, 72, 64], [0, 30, 128, 90]]
    assert updates == [("total", 2), 1, 1]
    # loaded as ComfyUI loads any model, with room for SAM's working memory; no hand-made device moves
    assert loads == [([loaded.patcher], sam_nodes.WORKING_BYTES)]
    assert any(m.model is loaded.patcher for m in comfy.model_management.current_loaded_models)
    comfy.model_management.unload_all_models()  # and ComfyUI can take it off its device again
    assert {p.device.type for p in loaded.model.parameters()} == {loaded.offload_device.type}


def test_sam_computes_in_fp16_where_comfyui_would_and_in_fp32_on_the_cpu(monkeypatch):
    import comfy.model_management

    from eye_for_an_eye.comfy_adapter import sam_models

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(comfy.model_management, "should_use_fp16", lambda device=None, **kwargs: device == cuda)
    assert sam_models.sam_dtype(cuda) == torch.float16
    assert sam_models.sam_dtype(torch.device("cuda", 1)) == torch.float32  # a device without fast fp16
    assert sam_models.sam_dtype(torch.device("cpu")) == torch.float32


def test_segmenting_in_fp16_gives_float32_masks(checkpoint, monkeypatch):
    from eye_for_an_eye.comfy_adapter import sam_models

    monkeypatch.setattr(sam_models, "sam_dtype", lambda device: torch.float16)
    (handle,) = run(sam_nodes.LoadSAMHQModel, checkpoint="sam_hq_vit_tiny.pth",
                    architecture=sam_nodes.AUTO_ARCHITECTURE, device="CPU")
    assert handle.dtype == torch.float16 and {p.dtype for p in handle.model.image_encoder.parameters()} == {torch.float16}
    assert {p.dtype for p in handle.model.mask_decoder.parameters()} == {torch.float32}
    calls = fast_encoder(monkeypatch, handle)  # fp16 embeddings, as the encoder gives them; it would take minutes here
    masks, merged, _ = segment(handle, picture(batch=1), boxes="8,8,72,64")
    assert masks.dtype == torch.float32 and merged.dtype == torch.float32 and masks.shape == (1, 96, 128)
    assert len(calls) == 1 and 0 < float(masks.mean()) < 1


def test_bad_boxes_fail_before_the_model_runs(loaded, monkeypatch):
    calls = fast_encoder(monkeypatch, loaded)
    with pytest.raises(PromptError, match=r"boxes: box 2 \('30,10,30,50'\) has zero area: zero width"):
        segment(loaded, picture(), boxes="0,0,10,10; 30,10,30,50")
    with pytest.raises(PromptError, match=r"box 1 \(200,0,260,40\) lies outside the 128x96 image"):
        segment(loaded, picture(), boxes="200,0,260,40")
    with pytest.raises(PromptError, match=r"positive_points: point 1 \('12'\) is not 2 numbers"):
        segment(loaded, picture(), positive="12")
    assert calls == []


def test_no_box_means_the_whole_image_and_points_prompt_alone(loaded, monkeypatch):
    calls = fast_encoder(monkeypatch, loaded)
    masks, merged, preview = segment(loaded, picture(height=60, width=90))
    assert masks.shape == (1, 60, 90) and torch.equal(masks, merged) and preview.shape == (1, 60, 90, 3)
    masks, _, preview = segment(loaded, picture(batch=3, height=60, width=90), positive="45,30", negative="2,2",
                                hq=False)
    assert masks.shape == (3, 60, 90)
    assert preview[0, 30, 45, 1] > 0.8 and preview[0, 2, 2, 0] > 0.9  # the points are marked
    assert calls == [(1, 3, 1024, 1024)] * 4  # normalised and padded to SAM's square input


def test_rgba_and_grey_images(loaded, monkeypatch):
    fast_encoder(monkeypatch, loaded)
    rgba = torch.rand(1, 40, 30, 4)
    masks, _, preview = segment(loaded, rgba, boxes="5,5,25,35")
    assert masks.shape == (1, 40, 30) and preview.shape == (1, 40, 30, 3)
    grey = torch.rand(2, 40, 30, 1)
    masks, _, preview = segment(loaded, grey, boxes="5,5,25,35")
    assert masks.shape == (2, 40, 30) and preview.shape == (2, 40, 30, 3)


def test_interrupting_stops_between_images(loaded, monkeypatch):
    calls = fast_encoder(monkeypatch, loaded)

    class Interrupted(Exception):
        pass

    checks = []

    def check():
        checks.append(1)
        if len(checks) == 2:
            raise Interrupted()

    monkeypatch.setattr(sam_nodes, "check_interrupt", check)
    with pytest.raises(Interrupted):
        segment(loaded, picture(batch=3), boxes="0,0,50,50")
    assert len(checks) == 2 and len(calls) == 1  # the first image only


def test_a_wrong_model_input_is_refused():
    with pytest.raises(TypeError, match="must come from Load SAM-HQ Model"):
        segment(object(), picture(), boxes="")


def test_the_loader_defaults_to_the_readmes_checkpoint_when_it_is_there():
    assert sam_nodes.DEFAULT_CHECKPOINT == "sam_hq_vit_l.pth"
    assert sam_nodes._default_checkpoint(["sam_hq_vit_b.pth", "sam_hq_vit_l.pth"]) == "sam_hq_vit_l.pth"
    assert sam_nodes._default_checkpoint(["a.pth", "sub/sam_hq_vit_l.pth"]) == "sub/sam_hq_vit_l.pth"
    assert sam_nodes._default_checkpoint(["sam_hq_vit_tiny.pth"]) == "sam_hq_vit_tiny.pth"  # else the first file
    assert sam_nodes._default_checkpoint([sam_nodes.NO_CHECKPOINT]) == sam_nodes.NO_CHECKPOINT
