/* One vector variant of the fused nearest-code kernel, instantiated by nearest_code.c with its
 * macros (KERNEL_NAME, KERNEL_TARGET, R rows, NV vectors of VL lanes, the VEC operations), which
 * it undefines at the end so that the next variant can define them again.
 *
 * Rows [begin, end) in tiles of R rows; the rows of a last, partial tile repeat its last row (the
 * repeats are computed and dropped). For each tile of W = NV * VL codes: R * NV accumulators over
 * d, one broadcast of x per row and NV loads of packed -2 E per d; then the scores are stored in
 * the rows' score lines (`scores`, R lines of k_padded floats) and folded into each row's lane
 * minima. A row's code is the first position of its minimum in its line: the first minimal index,
 * the portable variant's strict < over codes in order. */

KERNEL_TARGET static void KERNEL_NAME(const job_t *job, int64_t begin, int64_t end,
                                     float *scores) {
    const int64_t d = job->d, kp = job->k_padded, width = NV * VL;
    for (int64_t i0 = begin; i0 < end; i0 += R) {
        const float *xr[R];
        VEC best[R];
        for (int r = 0; r < R; r++) {
            int64_t i = i0 + r < end ? i0 + r : end - 1;
            xr[r] = job->x + i * d;
            best[r] = VINF();
        }
        for (int64_t k0 = 0; k0 < kp; k0 += width) {
            const float *e = job->packed + k0 * d;
            VEC acc[R][NV];
#pragma GCC unroll 8
            for (int r = 0; r < R; r++)
                for (int v = 0; v < NV; v++) acc[r][v] = VZERO();
            for (int64_t j = 0; j < d; j++, e += width) {
                VEC ev[NV];
                for (int v = 0; v < NV; v++) ev[v] = VLOAD(e + v * VL);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    VEC xb = VBCAST(xr[r] + j);
                    for (int v = 0; v < NV; v++) acc[r][v] = VFMA(xb, ev[v], acc[r][v]);
                }
            }
            /* the tile's scores go to the rows' score lines (cache-resident: R * K floats) and
             * into each lane's running minimum; min(s, best) keeps best when s is NaN */
            for (int v = 0; v < NV; v++) {
                VEC sq = VLOAD(job->sqnorm + k0 + v * VL);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    VEC s = VADD(acc[r][v], sq);
                    VSTORE(scores + r * kp + k0 + v * VL, s);
                    best[r] = VMIN(s, best[r]);
                }
            }
        }
        /* each row's minimum, then its first position in the row's score line */
        for (int r = 0; r < R && i0 + r < end; r++) {
            float lanes[VL], m = INFINITY;
            VSTORE(lanes, best[r]);
            for (int l = 0; l < VL; l++) m = lanes[l] < m ? lanes[l] : m;
            int64_t at = 0;
            if (m < INFINITY) { /* else every score is NaN or +inf: code 0 */
                const float *line = scores + r * kp;
                VEC mv = VSET1(m);
                for (int64_t c = 0; c < kp; c += VL) {
                    unsigned bits = EQBITS(VLOAD(line + c), mv);
                    if (bits) {
                        at = c + __builtin_ctz(bits);
                        break;
                    }
                }
            }
            job->out[i0 + r] = at;
        }
    }
}

#undef KERNEL_NAME
#undef KERNEL_TARGET
#undef R
#undef NV
#undef VL
#undef VEC
#undef VZERO
#undef VINF
#undef VLOAD
#undef VSTORE
#undef VBCAST
#undef VFMA
#undef VADD
#undef VMIN
#undef VSET1
#undef EQBITS
