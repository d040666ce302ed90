from ocbench.info import describe


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
