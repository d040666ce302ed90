from ocbench import config
from ocbench.config import REPO_ROOT
from ocbench.info import describe, table


def test_octave_inner_blocks_need_under_half_the_flops():
    g0, d0 = describe(0.0, 32, 100)
    g5, d5 = describe(0.5, 32, 100)
    assert (g5.inner_flops + d5.inner_flops) < 0.5 * (g0.inner_flops + d0.inner_flops)
    # DESIGN's measured vanilla numbers, d = 32: G 0.634 GFLOP/image, D 0.158.
    assert round(g0.flops / 1e9, 3) == 0.634 and round(d0.flops / 1e9, 3) == 0.158
    assert g0.params == g5.params  # an octave conv splits the same weights four ways


def test_model_info_lists_every_variant(cli):
    proc = cli("model-info", "--set", "train.width=8", check=True)
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert rows == ["baseline", "oct", "low", "ramp", "combi"]


def test_the_resnet_preset_has_mimicrys_sngan_128_parameter_counts():
    """`ocbench model-info --config workflow/config/sngan-resnet.yaml` (its table, in this process): at
    ngf = ndf = 1024 every variant has mimicry's SNGAN-128 counts, G 32,150,787 and D 29,017,857 (the
    octave form splits the same weights four ways)."""
    lines = table(config.load([REPO_ROOT / "workflow" / "config" / "sngan-resnet.yaml"])).splitlines()
    assert lines[0].startswith("networks: ResNet (SN-GAN) ngf 1024, ndf 1024, latent 128")
    assert [row.split()[0] for row in lines[2:]] == ["baseline", "oct", "low", "ramp", "combi"]
    assert all(row.split()[2:4] == ["32,150,787", "29,017,857"] for row in lines[2:])
