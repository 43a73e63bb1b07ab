"""FreeU (authors' variant) in ComfyUI: where it acts, the fingerprint, ComfyUI's FreeU beside it, the all-in-one."""

import copy
import logging

import pytest
import torch
from eye_test_support.comfy_env import require_comfy

require_comfy()

from eye_for_an_eye.comfy_adapter import fingerprints  # noqa: E402
from eye_for_an_eye.nodes import freeu, transfer  # noqa: E402


def run(node, **inputs):
    return tuple(node.execute(**inputs).args)


def test_it_acts_at_the_up_block_entries_only_and_leaves_the_input_model_alone(sd15, tiny, monkeypatch):
    options_before = copy.deepcopy(sd15.model_options)
    (patched,) = run(freeu.AuthorsFreeU, model=sd15, b1=1.2, b2=1.4, s1=0.9, s2=0.2)
    assert patched is not sd15 and sd15.model_options == options_before
    seen = []
    patch = patched.model_options["transformer_options"]["patches"]["output_block_patch"][0]
    real = patch.freeu.apply

    def spy(h, block):
        out = real(h, block)
        seen.append((block, int(h.shape[1]), out is not h))
        return out

    monkeypatch.setattr(patch.freeu, "apply", spy)
    pos, _ = tiny.sd15_conds()
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = sd15.model.apply_model(x, torch.tensor([1.0]), c_crossattn=pos[0][0], transformer_options={})
        out = sd15.model.apply_model(x, torch.tensor([1.0]), c_crossattn=pos[0][0],
                                     transformer_options=patched.model_options["transformer_options"])
    assert not torch.allclose(out, plain)
    assert [b for b, _, _ in seen] == list(range(12))
    # the tiny SD1.5 (model_channels 32, mult 1,2,4,4): entries 0, 3, 6, 9 carry 128, 128, 128, 64 channels
    assert [(b, c) for b, c, changed in seen if changed] == [(0, 128), (3, 128), (6, 128), (9, 64)]


def test_its_settings_are_part_of_the_models_fingerprint(sd15):
    one = run(freeu.AuthorsFreeU, model=sd15, b1=1.2, b2=1.4, s1=0.9, s2=0.2)[0]
    again = run(freeu.AuthorsFreeU, model=sd15, b1=1.2, b2=1.4, s1=0.9, s2=0.2)[0]
    other = run(freeu.AuthorsFreeU, model=sd15, b1=1.1, b2=1.4, s1=0.9, s2=0.2)[0]
    assert fingerprints.model_print(one) == fingerprints.model_print(again)
    assert fingerprints.model_print(one) != fingerprints.model_print(other) != fingerprints.model_print(sd15)
    assert fingerprints.model_print(one) != fingerprints.model_print(sd15)
    assert any("AuthorsFreeUPatch" in name for name in fingerprints.model_print(one).patch_summary)


def test_comfyuis_freeu_stays_usable_and_two_freeus_are_named(sd15, caplog):
    from comfy_extras.nodes_freelunch import FreeU

    comfy_freeu = FreeU().patch(sd15, 1.2, 1.4, 0.9, 0.2)[0]
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        run(freeu.AuthorsFreeU, model=sd15, b1=1.2, b2=1.4, s1=0.9, s2=0.2)
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        both = run(freeu.AuthorsFreeU, model=comfy_freeu, b1=1.2, b2=1.4, s1=0.9, s2=0.2)[0]
    assert any("already carries an output-block patch" in r.getMessage() for r in caplog.records)
    assert len(both.model_options["transformer_options"]["patches"]["output_block_patch"]) == 2


def test_a_model_that_is_not_a_unet_is_refused(sd15):
    class NotAUnet:
        model = None

        def get_model_object(self, name):
            return None

    with pytest.raises(ValueError, match=r"^FreeU \(authors' variant\): this MODEL"):
        run(freeu.AuthorsFreeU, model=NotAUnet(), b1=1.2, b2=1.4, s1=0.9, s2=0.2)


def test_the_all_in_one_node_runs_the_authors_freeu_unless_told_otherwise(sd15, tiny, monkeypatch):
    applied = []
    real = transfer.authors_freeu

    def recording(model, **kwargs):
        applied.append(model)
        return real(model, **kwargs)

    monkeypatch.setattr(transfer, "authors_freeu", recording)
    vae = tiny.tiny_vae()
    pos, neg = tiny.sd15_conds()
    options_before = copy.deepcopy(sd15.model_options)
    inputs = dict(model=sd15, vae=vae, positive=pos, negative=neg, target=torch.rand(1, 64, 64, 3),
                  reference=torch.rand(1, 64, 64, 3), steps=4, skip_steps=1, inversion_cfg=3.5, cfg=2.5,
                  matching=transfer.PER_STEP, seed=0)
    official = run(transfer.AppearanceTransfer, **inputs)[1]["samples"]  # freeu left out: old workflows
    assert applied == [sd15] and sd15.model_options == options_before
    plain = run(transfer.AppearanceTransfer, **inputs, freeu=transfer.MODEL_AS_CONNECTED)[1]["samples"]
    assert applied == [sd15]
    assert not torch.allclose(official, plain)
    with pytest.raises(ValueError, match=r"^Eye-for-an-eye Appearance Transfer: freeu is .both., which is not one of "
                                         r"its options"):
        run(transfer.AppearanceTransfer, **inputs, freeu="both")


def test_the_all_in_one_node_never_adds_a_second_freeu(sd15, tiny, monkeypatch, caplog):
    """Workflows saved with ComfyUI's FreeU before the node (the old advice) keep one FreeU."""
    from comfy_extras.nodes_freelunch import FreeU

    applied = []
    monkeypatch.setattr(transfer, "authors_freeu", lambda model, **kwargs: applied.append(model) or model)
    comfy_freeu = FreeU().patch(sd15, 1.2, 1.4, 0.9, 0.2)[0]
    pos, neg = tiny.sd15_conds()
    with caplog.at_level(logging.WARNING, logger="eye_for_an_eye"):
        run(transfer.AppearanceTransfer, model=comfy_freeu, vae=tiny.tiny_vae(), positive=pos, negative=neg,
            target=torch.rand(1, 64, 64, 3), reference=torch.rand(1, 64, 64, 3), steps=4, skip_steps=1,
            inversion_cfg=3.5, cfg=2.5, matching=transfer.PER_STEP, seed=0)
    assert applied == []
    assert any("already carries FreeU" in r.getMessage() for r in caplog.records)
