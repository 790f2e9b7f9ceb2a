"""The shipped recipes train: the 512 settings stay bounded where the old ones blew up.

At 32 px with the 512 model's full widths (the blow-up comes from the wide plain-conv codec under
Adam's first sign-like steps, not from the image size), measured on this machine's CPU:
old settings (lr 2e-3, betas (0, 0.99), no warm-up) l1 0.82 -> 15 -> 4261 -> 3.3e7 by step 4;
the shipped settings stay between 0.4 and 0.9 for 20 steps (l1/pyramid/redegrade only).
"""

from pathlib import Path

import pytest

from mmrface.config import load_config
from mmrface.train.trainer import NonFiniteLossError, Trainer

FACES = Path(__file__).resolve().parents[1] / "assets" / "faces"
SMALL_512 = ["model.size=32", "model.codec.enc_blocks=[2, 2, 2, 2]", f"data.train_root={FACES}",
             "data.batch_size=2", "data.num_workers=0", "train.val_every=0", "train.log_every=1",
             "train.ckpt_every=1000", "train.device=cpu"]


@pytest.mark.slow
def test_512_recipe_keeps_its_losses_bounded_at_small_size(tmp_path):
    # every shipped loss of the 512 config (perceptual, style, GAN + R1, components, redegrade);
    # the warm-up is compressed to 3 steps so that 12 steps run at the peak learning rate
    cfg = load_config("512", SMALL_512 + ["train.steps=15", "train.warmup_steps=3", f"train.out_dir={tmp_path / 'new'}"])
    t = Trainer(cfg, progress=False)
    t.fit()
    first = t.history[0]
    for name in ("l1", "pyramid", "perceptual", "style", "redegrade"):  # reconstruction: bounded by the start
        values = [h[name] for h in t.history if name in h]
        assert len(values) == 15, name
        assert max(values) < 5 * max(first[name], 0.1), (name, max(values), first[name])
    for name in ("gan", "component", "d_gan", "d_component"):  # adversarial: may rise, never explode
        assert max(h[name] for h in t.history) < 20, name
    assert sum(h["l1"] for h in t.history[-5:]) / 5 < first["l1"]  # and it learns


@pytest.mark.slow
def test_old_512_optimiser_settings_blow_up_and_the_guard_says_so(tmp_path):
    old = ["train.lr_g=0.002", "train.prior_lr_mul=1", "train.betas=[0, 0.99]", "train.warmup_steps=0",
           "train.grad_clip=0", "train.divergence_patience=1", "loss.perceptual=0", "loss.style=0",
           "loss.gan=0", "loss.component=0"]
    cfg = load_config("512", SMALL_512 + old + ["train.steps=10", f"train.out_dir={tmp_path / 'old'}"])
    with pytest.raises(NonFiniteLossError, match=r"loss '(l1|total|pyramid)' is .*x its running median"):
        Trainer(cfg, progress=False).fit()
