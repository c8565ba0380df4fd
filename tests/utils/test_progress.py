import io

from plmkit.utils.progress import bars_enabled, bars_off, progress_bar


def test_bars_off_blocks_nest_and_a_bar_keeps_its_own_disable():
    assert bars_enabled() and not progress_bar(range(2), file=io.StringIO()).disable
    with bars_off():
        with bars_off(False):
            assert not bars_enabled()  # (an enclosing block still holds them off)
        assert progress_bar(range(2), file=io.StringIO()).disable
    assert bars_enabled()
    assert progress_bar(range(2), file=io.StringIO(), disable=True).disable
