import pytest
import torch

from plmkit.nn import KVCache, MultiHeadAttention


def test_update_writes_in_place_and_returns_views():
    cache = KVCache(n_layers=2, batch=2, n_kv_heads=3, max_len=6, d_head=4)
    buffer = cache[0].k
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    k, v = cache[0].update(k1, v1)
    assert k.shape == (2, 3, 4, 4) and k.data_ptr() == buffer.data_ptr() and torch.equal(v, v1)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    k, v = cache[0].update(k2, v2)
    assert cache[0].k is buffer and torch.equal(k, torch.cat([k1, k2], 2)) and torch.equal(v, torch.cat([v1, v2], 2))
    assert cache[0].length == 5 and cache[1].length == 0
    cache[0].reorder(torch.tensor([1, 1]))
    assert torch.equal(cache[0].k[0, :, :5], cache[0].k[1, :, :5])
    with pytest.raises(RuntimeError, match="overflow"):
        cache[0].update(torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4))


@pytest.mark.parametrize("shape", [(1, 3, 2, 4), (2, 1, 2, 4), (2, 3, 2, 8)], ids=["batch", "heads", "channels"])
def test_update_with_keys_of_another_shape_is_refused(shape):
    """A batch-1 step written into a batch-2 cache broadcast into every row, silently."""
    cache = KVCache(n_layers=1, batch=2, n_kv_heads=3, max_len=6, d_head=4)
    expected = r"do not fit a cache of 2 rows x 3 heads x 4 channels: expected \(2, 3, T, 4\)"
    with pytest.raises(RuntimeError, match=expected):
        cache[0].update(torch.randn(shape), torch.randn(shape))
    with pytest.raises(RuntimeError, match="do not fit"):  # values unlike the keys
        cache[0].update(torch.randn(2, 3, 2, 4), torch.randn(shape))
    assert cache.length == 0


def test_cached_attention_equals_full_causal_attention_with_gqa():
    attn = MultiHeadAttention(32, n_heads=4, n_kv_heads=2).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        full, _ = attn(x, causal=True)
        cache = KVCache(1, 2, 2, 7, 8)[0]
        head, _ = attn(x[:, :5], causal=True, cache=cache)
        steps = [attn(x[:, i:i + 1], cache=cache)[0] for i in (5, 6)]
    torch.testing.assert_close(torch.cat([head, *steps], 1), full, atol=1e-6, rtol=1e-5)


def test_reorder_moves_only_the_rows_that_change_and_reads_sources_before_writing():
    cache = KVCache(2, 4, 1, 5, 2)
    k = torch.arange(4.0)[:, None, None, None].expand(4, 1, 3, 2).clone()  # row r holds r
    for layer in range(2):
        cache[layer].update(k, -k)
    cache.reorder(torch.tensor([1, 0, 0, 3]))  # a swap (each side reads the other's old row), a copy, a stay
    for layer in range(2):
        assert cache[layer].k[:, 0, :3, 0].tolist() == [[1.0] * 3, [0.0] * 3, [0.0] * 3, [3.0] * 3]
        assert torch.equal(cache[layer].v[:, :, :3], -cache[layer].k[:, :, :3])


def test_seq2seq_cache_keeps_rows_with_their_own_sources():
    from plmkit.nn.cache import Seq2SeqCache
    rows = torch.arange(3.0)[:, None, None, None]  # row r holds r, its source r as well
    cross = [(rows.expand(3, 1, 4, 2).clone(), -rows.expand(3, 1, 4, 2).clone())]
    cache = Seq2SeqCache(1, 3, 1, 6, 2, cross, rows.expand(3, 1, 1, 4).clone())
    cache[0].update(rows.expand(3, 1, 2, 2).clone(), rows.expand(3, 1, 2, 2).clone())
    cache.keep(torch.tensor([2, 0]))
    assert cache[0].k[:, 0, :2, 0].tolist() == [[2.0, 2.0], [0.0, 0.0]] and cache[0].length == 2
    assert cache.cross[0][0][:, 0, 0, 0].tolist() == [2.0, 0.0] and cache.cross[0][1][:, 0, 0, 0].tolist() == [-2.0, 0.0]
    assert cache.cross_bias[:, 0, 0, 0].tolist() == [2.0, 0.0]
    k, _ = cache[0].update(torch.full((2, 1, 1, 2), 9.0), torch.zeros(2, 1, 1, 2))  # the next step: 2 rows
    assert k.shape == (2, 1, 3, 2) and k[:, 0, 2, 0].tolist() == [9.0, 9.0]
    beams = Seq2SeqCache(1, 4, 1, 6, 2, [(torch.zeros(2, 1, 4, 2), torch.zeros(2, 1, 4, 2))], None)
    with pytest.raises(RuntimeError, match="one source per row"):
        beams.keep(torch.tensor([0]))


def test_seq2seq_slot_cache_rows_bring_their_own_sources():
    from plmkit.nn.cache import Seq2SeqSlotCache
    cache = Seq2SeqSlotCache(n_layers=1, slots=3, n_kv_heads=1, max_len=6, d_head=2, source_step=4)

    def source(value: float, length: int, padded_to: int):  # one layer's (H, S, d) keys and values, S padded
        k = torch.full((1, padded_to, 2), value)
        k[:, length:] = -1.0  # padding columns are never copied
        return [(k, -k)]

    assert cache.join_source(source(1.0, 3, 5), 3) == 0 and cache.cross_k[0].shape == (3, 1, 4, 2)
    assert cache.cross_bias is None and cache.cross[0][0].shape == (1, 1, 3, 2)  # one source: nothing hidden
    assert cache.join_source(source(2.0, 2, 5), 2) == 1
    assert cache.join_source(source(3.0, 5, 5), 5) == 2 and cache.cross_k[0].shape == (3, 1, 8, 2)  # widened by 4
    assert cache.cross_k[0][0, 0, :3, 0].tolist() == [1.0] * 3  # kept through the widening
    k, v = cache.cross[0]
    assert k.shape == (3, 1, 5, 2) and torch.equal(v, -k) and not bool((k[:, :, :, 0] == -1).any())
    visible = cache.cross_bias[:, 0, 0] == 0  # (3, 5): each row's own source columns
    assert visible.tolist() == [[True] * 3 + [False] * 2, [True] * 2 + [False] * 3, [True] * 5]
    assert cache.step_mask().tolist() == [[1]] * 3 and cache.positions().tolist() == [[0]] * 3  # start tokens next
    cache.advance()
    assert cache.leave(0) == 2  # the last row, its source with it, moves into the freed one
    assert cache.source_lengths[:2].tolist() == [5, 2] and cache.cross[0][0][0, 0, :, 0].tolist() == [3.0] * 5
    assert cache.source_width == 5 and cache.lengths[:2].tolist() == [1, 1]
    cache.leave(0)
    assert cache.source_width == 2 and cache.cross_bias is None and cache.cross[0][0].shape == (1, 1, 2, 2)


def test_slot_cache_grows_with_its_longest_row_and_shrinks_when_empty():
    from plmkit.nn.cache import SlotKVCache
    cache = SlotKVCache(n_layers=2, slots=2, n_kv_heads=1, max_len=20, d_head=2, step=4)
    assert cache.width == 4 and cache.max_len == 20
    written = [[], []]  # what each row holds, position by position

    def prompt(row: int, length: int):
        view = cache.row_cache(row, length)
        values = [float(10 * row + i) for i in range(length)]
        for layer in view.layers:
            layer.update(torch.tensor(values).view(1, 1, length, 1).expand(1, 1, length, 2), torch.zeros(1, 1, length, 2))
        written[row] += values
        assert cache.join(length) == row

    prompt(0, 3)
    assert cache.width == 4
    prompt(1, 6)  # wider than the buffers: twice as wide, row 0 kept
    assert cache.width == 8
    widths = []
    for step in range(20):  # row 1 holds 6 + step positions: 8 -> 16 -> 20 (max_len) columns, then the overflow
        new = torch.tensor([100.0 + step, 200.0 + step]).view(2, 1, 1, 1).expand(2, 1, 1, 2)
        if 6 + step == 20:
            with pytest.raises(RuntimeError, match="overflow"):
                cache[0].update(new, torch.zeros(2, 1, 1, 2))
            break
        for layer in range(2):
            k, _ = cache[layer].update(new, torch.zeros(2, 1, 1, 2))
        written[0].append(100.0 + step)
        written[1].append(200.0 + step)
        widths.append(cache.width)
        for row in range(2):  # every layer reads each row's history, through every widening
            n = len(written[row])
            assert k[row, 0, :n, 0].tolist() == written[row] and cache[0].k[row, 0, :n, 0].tolist() == written[row]
        cache.advance()
    assert step == 14 and sorted(set(widths)) == [8, 16, 20] and widths.index(16) == 2 and widths.index(20) == 10
    assert cache.width == 20
    cache.leave(0)
    assert cache.width == 20 and cache.layers[1].k[0, 0, :len(written[1]), 0].tolist() == written[1]  # one row left
    cache.leave(0)
    assert cache.width == 4 and cache.active == 0  # empty: back to the first width


def test_slot_cache_leave_of_a_row_that_is_not_active_is_refused():
    from plmkit.nn.cache import SlotKVCache
    cache = SlotKVCache(n_layers=1, slots=3, n_kv_heads=1, max_len=8, d_head=2, step=4)
    cache.row_cache(0, 2)
    cache.join(2)
    for row in (1, 2, -1):  # free slots, and no such row
        with pytest.raises(RuntimeError, match=rf"leave\({row}\): row {row} is not active; the active rows are 0 .. 0"):
            cache.leave(row)
    assert cache.active == 1 and cache.lengths[0] == 2  # unchanged
    assert cache.leave(0) == 0 and cache.active == 0


def test_seq2seq_slot_cache_drops_its_sources_when_empty():
    from plmkit.nn.cache import Seq2SeqSlotCache
    cache = Seq2SeqSlotCache(n_layers=1, slots=2, n_kv_heads=1, max_len=6, d_head=2, source_step=4)
    cache.join_source([(torch.ones(1, 9, 2), torch.ones(1, 9, 2))], 9)
    assert cache.cross_k[0].shape == (2, 1, 12, 2)
    cache.leave(0)
    assert cache.cross_k == [] and cache.cross_v == []
    cache.join_source([(torch.ones(1, 2, 2), torch.ones(1, 2, 2))], 2)
    assert cache.cross_k[0].shape == (2, 1, 4, 2)  # as wide as the new source needs
