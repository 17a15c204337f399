/* One vector variant of the fused nearest-code kernel, instantiated by nearest_code.c with its
 * macros (KERNEL_NAME, KERNEL_TARGET, R rows, NV vectors of VL lanes, the VEC operations), which
 * it undefines at the end so that the next variant can define them again.
 *
 * Rows [begin, end) in tiles of R rows; the rows of a last, partial tile repeat its last row (the
 * repeats are computed and dropped). For each tile of W = NV * VL codes: R * NV accumulators over
 * d, one broadcast of x per row and NV loads of packed -2 E per d; then every lane keeps its first
 * minimum (strict <, codes ascending). */

KERNEL_TARGET static void KERNEL_NAME(const job_t *job, int64_t begin, int64_t end) {
    const int64_t d = job->d, width = NV * VL;
    /* each lane's running minimum and its code, per row of the tile */
    float best[R][NV * VL], index[R][NV * VL];
    for (int64_t i0 = begin; i0 < end; i0 += R) {
        const float *xr[R];
        for (int r = 0; r < R; r++) {
            int64_t i = i0 + r < end ? i0 + r : end - 1;
            xr[r] = job->x + i * d;
            for (int l = 0; l < NV * VL; l++) {
                best[r][l] = INFINITY;
                index[r][l] = 0.0f;
            }
        }
        for (int64_t k0 = 0; k0 < job->k_padded; k0 += width) {
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
            /* scores, and whether any lane of the tile improved: after the first few tiles a
             * running minimum rarely moves, so the update below is rarely taken */
            MASK any = MZERO();
            for (int v = 0; v < NV; v++) {
                VEC sq = VLOAD(job->sqnorm + k0 + v * VL);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    acc[r][v] = VADD(acc[r][v], sq);
                    any = MOR(any, VLT(acc[r][v], VLOAD(&best[r][v * VL])));
                }
            }
            if (!MANY(any)) continue;
            for (int v = 0; v < NV; v++) {
                VEC code = VIOTA((float)(k0 + v * VL));
                for (int r = 0; r < R; r++) {
                    VEC old = VLOAD(&best[r][v * VL]);
                    MASK lt = VLT(acc[r][v], old); /* strict: the first minimum stays */
                    VSTORE(&best[r][v * VL], VSEL(lt, old, acc[r][v]));
                    VSTORE(&index[r][v * VL], VSEL(lt, VLOAD(&index[r][v * VL]), code));
                }
            }
        }
        for (int r = 0; r < R && i0 + r < end; r++)
            job->out[i0 + r] = first_min(best[r], index[r], NV * VL);
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
#undef VIOTA
#undef MASK
#undef MZERO
#undef VLT
#undef MOR
#undef MANY
#undef VSEL
