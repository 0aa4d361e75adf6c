"""numpy mirror of the CUDA kernels' indexing, for testing their algorithm without a GPU.

Each function re-enacts one kernel of ``csrc/`` thread by thread (vectorized over lanes): the same
grid/block/warp/lane decomposition, the same word and fragment index formulas, the same bounds
guards and the same epilogue. Tests compare them to the float oracle (``+-1`` matmul) on odd shapes,
so an indexing mistake in the CUDA design shows up on the CPU; the ``cuda``-marked tests then check
the compiled kernels against the same oracle on a GPU.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mirror_bconv", "mirror_bmma", "mirror_gemv", "mirror_pack_nhwc", "mirror_pack_sign"]

GEMV_WARPS, GEMV_ROWS_PER_WARP, GEMV_UNROLL = 4, 2, 4  # bgemv.cu
GEMV_TILE_ROWS = GEMV_WARPS * GEMV_ROWS_PER_WARP
BM, BN, BMMA_THREADS = 64, 128, 256  # bmma.cu
STAGE_WORDS, SROW, BMMA_STAGES = 16, 20, 3


def _popc(v: np.ndarray) -> np.ndarray:
    return np.bitwise_count(v.astype(np.uint32)).astype(np.int64)


def _ballot(pred: np.ndarray) -> np.ndarray:
    """``__ballot_sync`` over the last axis (32 lanes): bit l = lane l's predicate."""
    return (pred.astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(-1).astype(np.uint32)


def mirror_pack_sign(x: np.ndarray, k: int, wd: int) -> tuple[np.ndarray, np.ndarray]:
    """``bnn_pack_sign``: one warp per word, lane l reads ``x[b, 32 word + l]``."""
    b_rows = x.shape[0]
    out = np.zeros((b_rows, wd), np.uint32)
    pa = np.zeros(b_rows, np.int64)
    lanes = np.arange(32)
    for b in range(b_rows):
        for word in range(wd):
            kk = word * 32 + lanes
            valid = kk < k
            vals = np.where(valid, x[b, np.minimum(kk, x.shape[1] - 1)], -1.0)
            w = _ballot(valid & (vals >= 0))
            out[b, word] = w
            pa[b] += _popc(w)
    return out, pa.astype(np.int32)


def mirror_gemv(w: np.ndarray, k: int, *, x: np.ndarray | None = None, a: np.ndarray | None = None,
                thr: np.ndarray | None = None, out_ld: int | None = None) -> np.ndarray:
    """``gemv_body`` of ``bgemv.cu``: int32 ``y [B, O]``, or with ``thr`` the packed bits ``[B, out_ld]``.

    Re-enacts the block of 4 warps x 2 rows (one output byte), the lane's uint4 indices
    ``q0 + 32 u`` of the software-pipelined loop (zeros beyond the row and for rows >= O), the
    butterfly sum and the byte-wise threshold output.
    """
    o_rows, wd = w.shape
    src = x if x is not None else a
    if src is None:
        raise ValueError("Give `x` (float input) or `a` (packed input).")
    b_rows = src.shape[0]
    lanes = np.arange(32)
    if x is not None:  # fused sign+pack into shared memory: warp-strided words, ballots
        a_s = np.zeros((b_rows, wd), np.uint32)
        for b in range(b_rows):
            for warp in range(GEMV_WARPS):
                for word in range(warp, wd, GEMV_WARPS):
                    kk = word * 32 + lanes
                    valid = kk < k
                    a_s[b, word] = _ballot(valid & (x[b, np.minimum(kk, x.shape[1] - 1)] >= 0))
    else:
        a_s = src.astype(np.uint32)
    wq = wd // 4
    w4 = w.reshape(o_rows, wq, 4)
    as4 = a_s.reshape(b_rows, wq, 4)
    if thr is not None and out_ld is None:
        out_ld = -(-o_rows // 32)
    blocks = 4 * int(out_ld) if thr is not None and out_ld is not None else -(-o_rows // GEMV_TILE_ROWS)
    y = np.zeros((b_rows, o_rows), np.int32)
    out_bytes = np.zeros((b_rows, 4 * (out_ld or 0)), np.uint8)
    for tile in range(blocks):
        bits_s = np.zeros((b_rows, GEMV_TILE_ROWS), np.uint32)
        for warp in range(GEMV_WARPS):
            o0 = tile * GEMV_TILE_ROWS + warp * GEMV_ROWS_PER_WARP
            t = [int(thr[o0 + r]) if thr is not None and o0 + r < o_rows else 0 for r in range(GEMV_ROWS_PER_WARP)]
            acc = np.zeros((GEMV_ROWS_PER_WARP, b_rows, 32), np.int64)  # per lane

            def load(q0: int, o0: int = o0) -> np.ndarray:  # [R, U, lane, 4], zeros past the row / past O
                v = np.zeros((GEMV_ROWS_PER_WARP, GEMV_UNROLL, 32, 4), np.uint32)
                for r in range(GEMV_ROWS_PER_WARP):
                    for u in range(GEMV_UNROLL):
                        q = q0 + u * 32 + lanes
                        ok = (q < wq) & (o0 + r < o_rows)
                        if o0 + r < o_rows:
                            v[r, u, ok] = w4[o0 + r, q[ok]]
                return v

            cur = load(0)
            for q0 in range(0, wq, 32 * GEMV_UNROLL):  # lane-relative: lane l's q0 is q0 + l
                nxt = load(q0 + 32 * GEMV_UNROLL)
                for u in range(GEMV_UNROLL):
                    q = q0 + u * 32 + lanes
                    ok = q < wq
                    for b in range(b_rows):
                        av = np.zeros((32, 4), np.uint32)
                        av[ok] = as4[b, q[ok]]
                        for r in range(GEMV_ROWS_PER_WARP):
                            acc[r, b] += np.where(ok, _popc(av ^ cur[r, u]).sum(-1), 0)
                cur = nxt
            for r in range(GEMV_ROWS_PER_WARP):
                o = o0 + r
                for b in range(b_rows):
                    dot = k - 2 * int(acc[r, b].sum())  # butterfly shuffle sum: every lane gets the total
                    if thr is not None:
                        bits_s[b, warp * GEMV_ROWS_PER_WARP + r] = 1 if (o < o_rows and dot >= t[r]) else 0
                    elif o < o_rows:
                        y[b, o] = dot
        if thr is not None:
            for b in range(b_rows):
                out_bytes[b, tile] = (bits_s[b].astype(np.uint64) << np.arange(GEMV_TILE_ROWS, dtype=np.uint64)).sum()
    if thr is not None:
        return np.ascontiguousarray(out_bytes).view("<u4").astype(np.uint32)  # little-endian words
    return y


def mirror_bmma(a: np.ndarray, w: np.ndarray, k: int, pa: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """``bnn_bmma``: 64 x 128 block tiles, the cp.async stage copies (ring of ``BMMA_STAGES`` buffers,
    zero fill), 8 warps in 2 x 4, m16n8k256 fragment indexing and the epilogue."""
    m_rows, wd = a.shape

    def load_a(a_s: np.ndarray, m0: int, k0: int, pop: np.ndarray) -> None:
        for thread in range(BMMA_THREADS):  # one 16-byte copy per thread
            row, q = thread >> 2, thread & 3
            word = k0 + q * 4
            ok = m0 + row < m_rows and word < wd
            a_s[row, q * 4: q * 4 + 4] = a[m0 + row, word: word + 4] if ok else 0

    return _bmma_core(load_a, m_rows, w, k, lambda m0, pop: pa[m0: m0 + BM], pw)


def mirror_pack_nhwc(x: np.ndarray, padding: tuple[int, int], pad_value: float) -> np.ndarray:
    """``bnn_pack_nhwc``: one word per (n, hp, wp, cw), same index decomposition and padding rule."""
    n, c, h, w = x.shape
    ph, pw = padding
    hp, wp, cw = h + 2 * ph, w + 2 * pw, -(-c // 32)
    out = np.zeros(n * hp * wp * cw, np.uint32)
    for idx in range(out.size):
        cwi, p = idx % cw, idx // cw
        wpi, p = p % wp, p // wp
        hpi, ni = p % hp, p // hp
        hh, ww = hpi - ph, wpi - pw
        c_end = min(c - cwi * 32, 32)
        if 0 <= hh < h and 0 <= ww < w:
            bits = x[ni, cwi * 32: cwi * 32 + c_end, hh, ww] >= 0
        else:
            bits = np.full(c_end, pad_value > 0)
        out[idx] = (bits.astype(np.uint64) << np.arange(c_end, dtype=np.uint64)).sum()
    return out.reshape(n, hp, wp, cw)


def mirror_bconv(act: np.ndarray, w: np.ndarray, k: int, pw: np.ndarray, *, kernel_size: tuple[int, int],
                 stride: tuple[int, int]) -> np.ndarray:
    """``bnn_bconv``: the implicit-GEMM gather (thread -> row, 4 words; word -> tap, channel word, (i, j)),
    4-byte zero-filling copies, the in-kernel popcount of each gathered row, then the GEMM of ``bnn_bmma``.
    Returns ``int32 [N, Ho, Wo, O]``."""
    n_img, hp, wp, cw = act.shape
    kh, kw = kernel_size
    sh, sw = stride
    taps = kh * kw
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    m_rows = n_img * ho * wo
    flat = act.reshape(-1)

    def load_a(a_s: np.ndarray, m0: int, k0: int, pop: np.ndarray) -> None:
        for thread in range(BMMA_THREADS):
            row, q = thread >> 2, thread & 3
            m = m0 + row
            valid = m < m_rows
            if valid:
                img, rem = divmod(m, ho * wo)
                oh, ow = divmod(rem, wo)
                base = ((img * hp + oh * sh) * wp + ow * sw) * cw
            for e in range(4):
                kword = k0 + q * 4 + e
                tap, c_w = divmod(kword, cw)
                i, j = divmod(tap, kw)
                ok = valid and tap < taps
                a_s[row, q * 4 + e] = flat[base + (i * wp + j) * cw + c_w] if ok else 0
            pop[thread] += int(_popc(a_s[row, q * 4: q * 4 + 4]).sum())  # the copying thread's own words

    def pa_rows(m0: int, pop: np.ndarray) -> np.ndarray:  # shuffle-sum of the 4 copying threads of a row
        return pop.reshape(BM, 4).sum(1)

    c = _bmma_core(load_a, m_rows, w, k, pa_rows, pw)
    return c.reshape(n_img, ho, wo, -1)


def _bmma_core(load_a, m_rows: int, w: np.ndarray, k: int, pa_rows, pw: np.ndarray) -> np.ndarray:
    """Block loop, W stage copies, the stage ring, warp fragments and epilogue shared by both kernels.

    ``load_a(a_s, m0, k0, pop)`` fills one A stage buffer (``pop``: per-thread popcount accumulator);
    ``pa_rows(m0, pop)`` gives popc(a) of the block's rows for the epilogue."""
    n_rows, wd = w.shape
    c = np.full((m_rows, n_rows), np.iinfo(np.int32).min, np.int64)  # poisoned: every cell must be written
    lanes = np.arange(32)
    group, tid = lanes >> 2, lanes & 3
    nk = -(-wd // STAGE_WORDS)

    def load_w(w_s: np.ndarray, n0: int, k0: int) -> None:
        for thread in range(BMMA_THREADS):
            for t in range(2):  # two 16-byte copies per thread
                idx = thread + t * BMMA_THREADS
                row, q = idx >> 2, idx & 3
                word = k0 + q * 4
                ok = n0 + row < n_rows and word < wd
                w_s[row, q * 4: q * 4 + 4] = w[n0 + row, word: word + 4] if ok else 0

    for by in range(-(-m_rows // BM)):
        for bx in range(-(-n_rows // BN)):
            m0, n0 = by * BM, bx * BN
            a_ring = np.full((BMMA_STAGES, BM, SROW), 0xDEADBEEF, np.uint32)  # stale data must never be used
            w_ring = np.full((BMMA_STAGES, BN, SROW), 0xDEADBEEF, np.uint32)
            pop = np.zeros(BMMA_THREADS, np.int64)
            acc = np.zeros((8, 2, 4, 32, 4), np.int64)  # warp, i, j, lane, reg
            for s in range(BMMA_STAGES - 1):
                if s < nk:
                    load_a(a_ring[s], m0, s * STAGE_WORDS, pop)
                    load_w(w_ring[s], n0, s * STAGE_WORDS)
            for kt in range(nk):
                pre = kt + BMMA_STAGES - 1
                if pre < nk:
                    load_a(a_ring[pre % BMMA_STAGES], m0, pre * STAGE_WORDS, pop)
                    load_w(w_ring[pre % BMMA_STAGES], n0, pre * STAGE_WORDS)
                a_s, w_s = a_ring[kt % BMMA_STAGES], w_ring[kt % BMMA_STAGES]
                for warp in range(8):
                    wm, wn = warp >> 2, warp & 3
                    for kc in range(0, STAGE_WORDS, 8):
                        for i in range(2):
                            r0 = wm * 32 + i * 16
                            af = np.stack([a_s[r0 + group, kc + tid], a_s[r0 + group + 8, kc + tid],
                                           a_s[r0 + group, kc + tid + 4], a_s[r0 + group + 8, kc + tid + 4]], 1)
                            for j in range(4):
                                c0 = wn * 32 + j * 8
                                bf = np.stack([w_s[c0 + group, kc + tid], w_s[c0 + group, kc + tid + 4]], 1)
                                acc[warp, i, j] += _mma_and_popc(af, bf)
            pa_blk = np.zeros(BM, np.int64)
            rows_pa = np.asarray(pa_rows(m0, pop), np.int64)
            pa_blk[: len(rows_pa)] = rows_pa
            for warp in range(8):
                wm, wn = warp >> 2, warp & 3
                for i in range(2):
                    for j in range(4):
                        for r in range(4):
                            lr = wm * 32 + i * 16 + group + (8 if r >= 2 else 0)
                            m = m0 + lr
                            n = n0 + wn * 32 + j * 8 + 2 * tid + (r & 1)
                            ok = (m < m_rows) & (n < n_rows)
                            c[m[ok], n[ok]] = k - 2 * pa_blk[lr[ok]] - 2 * pw[n[ok]] + 4 * acc[warp, i, j, ok, r]
    return c.astype(np.int32)


def _mma_and_popc(af: np.ndarray, bf: np.ndarray) -> np.ndarray:
    """One ``mma.m16n8k256 .b1 .and.popc`` from lane fragments: rebuild the 16x8-word A tile and the
    8x8-word B tile from (group, tid) positions, AND-popcount, hand C back in the c0..c3 layout."""
    lanes = np.arange(32)
    group, tid = lanes >> 2, lanes & 3
    a_tile = np.zeros((16, 8), np.uint32)
    b_tile = np.zeros((8, 8), np.uint32)
    filled = np.zeros((16, 8), int)
    a_tile[group, tid], a_tile[group + 8, tid] = af[:, 0], af[:, 1]
    a_tile[group, tid + 4], a_tile[group + 8, tid + 4] = af[:, 2], af[:, 3]
    for rr, cc in ((group, tid), (group + 8, tid), (group, tid + 4), (group + 8, tid + 4)):
        np.add.at(filled, (rr, cc), 1)
    assert (filled == 1).all(), "A fragments must cover the 16x256-bit tile exactly once"
    b_tile[group, tid], b_tile[group, tid + 4] = bf[:, 0], bf[:, 1]
    prod = _popc(a_tile[:, None, :] & b_tile[None, :, :]).sum(-1)  # [16, 8]
    return np.stack([prod[group, 2 * tid], prod[group, 2 * tid + 1], prod[group + 8, 2 * tid],
                     prod[group + 8, 2 * tid + 1]], 1)
