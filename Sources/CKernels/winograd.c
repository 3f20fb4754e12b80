// 3x3 convolutions with stride 1 and padding 1 (ResNet's body: 13 of ResNet-18's 20 convolutions, ~88% of its
// multiply-adds at 32x32) by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", CVPR 2016):
//
//     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//
// for each 2x2 output tile, its 4x4 input patch d (zero outside the image) and each 3x3 filter g. Summed over
// the input channels, each of the 16 positions ξ of the 4x4 transform is one GEMM,
// M_ξ (OC, T) = U_ξ (OC, C) @ V_ξ (C, T), over the T tiles of a run of images: 16 multiply-adds per output
// tile and channel pair instead of 36 (2.25x fewer), on ck_gemm_small. The transforms are adds only.
//
// The input gradient of such a convolution is the same convolution of dout with the filters transposed
// (OC <-> C) and rotated by 180 degrees, so it runs the same code with those filters, adding into dinp.
//
// winograd6.c's F(4x4, 3x3) takes these layers first wherever it halves the multiply-adds; this file keeps the
// planes where it does not (2x2 and smaller: one 6x6 tile for 4 outputs) and ADVKIT_WINOGRAD=4x4 (A/B runs,
// or rounding closer to the direct sum).
//
// Numerics: the transforms' values are sums of up to 9 inputs (V) or 16 products (Y), with factors 1/2 in G; the
// results differ from the direct sum by a few float32 roundings of those sums (tested against a Double
// reference). Determinism: every output element's terms and order depend on the shape only (the GEMM's sum
// over C and the output transform), not on the thread count or the run of images.
#include "CKernels.h"
#include "internal.h"
#include <string.h>

#define WG_MR 6             // ck_gemm_small's panel height
#define WG_COLUMNS 256      // tiles per GEMM (columns of V_ξ)

int ck_winograd_f2x3_applies(const ck_conv2d_shape *s) {
    return ck_gemm_small_available() && ck_conv_new_routes_enabled() && s->KH == 3 && s->KW == 3 &&
           s->stride == 1 && s->pad == 1 && s->C >= 16 && s->OC >= 16;
}

typedef struct {
    size_t N, CI, CO, H, W;  // the convolution run: input (N,CI,H,W) -> output (N,CO,H,W)
    size_t TH, TW, nb;       // tiles per column and row of one image; images per GEMM
} wg_geom;

static wg_geom geometry(size_t N, size_t CI, size_t CO, size_t H, size_t W) {
    wg_geom g = {N, CI, CO, H, W, (H + 1) / 2, (W + 1) / 2, 1};
    const size_t tiles = g.TH * g.TW;
    g.nb = tiles >= WG_COLUMNS ? 1 : (WG_COLUMNS + tiles - 1) / tiles;
    if (g.nb > N) g.nb = N ? N : 1;
    return g;
}

static size_t pack_floats(size_t CO, size_t CI) { return (CO + WG_MR - 1) / WG_MR * WG_MR * CI; }

// Shared: 16 packed U_ξ. Per thread: V (16, CI, T) and M (16, CO, T).
static size_t per_thread_floats(const wg_geom *g) {
    const size_t T = g->nb * g->TH * g->TW;
    return 16 * g->CI * T + 16 * g->CO * T;
}

size_t ck_winograd_f2x3_workspace_floats(const ck_conv2d_shape *s, size_t threads) {
    // the larger of the two runs: forward (C -> OC) and input gradient (OC -> C)
    const wg_geom f = geometry(s->N, s->C, s->OC, s->H, s->W), b = geometry(s->N, s->OC, s->C, s->H, s->W);
    const size_t t = threads < 1 ? 1 : threads;
    const size_t ff = 16 * pack_floats(s->OC, s->C) + t * per_thread_floats(&f);
    const size_t bf = 16 * pack_floats(s->C, s->OC) + t * per_thread_floats(&b);
    return ff > bf ? ff : bf;
}

typedef struct {
    float *y, *work;
    const float *packs;  // the 16 transformed filters run_part reads
    float *packs_out;    // where transform_filters writes them
    const float *x, *weight, *bias;
    wg_geom g;
    size_t C, OC;      // the weight's (OC, C, 3, 3)
    int transposed;    // 1: the input gradient's filters g'[c][o] = rot180(w[o][c])
    int accumulate;    // 1: y += result (the input gradient); 0: y = act(result + bias)
    ck_activation act;
    float bound;
} wg_job;

// U = G g Gᵀ for output channels [begin, end) of the run, written straight into the 16 packs: U_ξ's (co, ci)
// lands in panel co / 6, row co % 6, column ci.
static void transform_filters(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const wg_job *j = (const wg_job *)ctx;
    const size_t CI = j->g.CI, CO = j->g.CO, pf = pack_floats(CO, CI);
    for (size_t co = begin; co < end; co++) {
        for (size_t ci = 0; ci < CI; ci++) {
            float f[3][3];
            if (!j->transposed) {
                const float *w = j->weight + (co * j->C + ci) * 9;  // w[o = co][c = ci]
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++) f[a][b] = w[a * 3 + b];
            } else {
                const float *w = j->weight + (ci * j->C + co) * 9;  // w[o = ci][c = co], rotated
                for (int a = 0; a < 3; a++)
                    for (int b = 0; b < 3; b++) f[a][b] = w[(2 - a) * 3 + (2 - b)];
            }
            float gf[4][3];  // G f
            for (int b = 0; b < 3; b++) {
                gf[0][b] = f[0][b];
                gf[1][b] = 0.5f * (f[0][b] + f[1][b] + f[2][b]);
                gf[2][b] = 0.5f * (f[0][b] - f[1][b] + f[2][b]);
                gf[3][b] = f[2][b];
            }
            float *dst = j->packs_out + (co / WG_MR) * CI * WG_MR + ci * WG_MR + co % WG_MR;
            for (int a = 0; a < 4; a++) {  // (G f) Gᵀ
                const float u[4] = {gf[a][0], 0.5f * (gf[a][0] + gf[a][1] + gf[a][2]),
                                    0.5f * (gf[a][0] - gf[a][1] + gf[a][2]), gf[a][2]};
                for (int b = 0; b < 4; b++) dst[(size_t)(a * 4 + b) * pf] = u[b];
            }
        }
    }
}

// V (16, CI, T): column t = i * TH*TW + th * TW + tw holds Bᵀ d B of image n0 + i's tile (th, tw). Bᵀ acts on
// the patch's rows, so it runs along whole padded input rows (contiguous); B then combines columns 2tw .. 2tw+3
// of those rows into each tile's 4 values, written along the tiles (contiguous in V).
CK_VECTOR static void transform_inputs(float *V, const float *x, size_t nb, const wg_geom *g) {
    const size_t CI = g->CI, H = g->H, W = g->W, TH = g->TH, TW = g->TW, tiles = TH * TW, T = nb * tiles;
    const size_t L = 2 * TW + 2;  // padded row length: column j is input column j - 1
    float rows[4][L], m[4][L];
    for (size_t i = 0; i < nb; i++) {
        for (size_t c = 0; c < CI; c++) {
            const float *xc = x + (i * CI + c) * H * W;
            for (size_t th = 0; th < TH; th++) {
                for (int r = 0; r < 4; r++) {
                    const long ih = (long)(2 * th) + r - 1;
                    float *row = rows[r];
                    for (size_t j = 0; j < L; j++) row[j] = 0.0f;
                    if (ih < 0 || ih >= (long)H) continue;
                    const float *src = xc + (size_t)ih * W;
                    for (size_t j = 0; j < W; j++) row[j + 1] = src[j];
                }
                for (size_t j = 0; j < L; j++) {  // Bᵀ d, every column at once
                    m[0][j] = rows[0][j] - rows[2][j];
                    m[1][j] = rows[1][j] + rows[2][j];
                    m[2][j] = rows[2][j] - rows[1][j];
                    m[3][j] = rows[1][j] - rows[3][j];
                }
                float *v = V + c * T + i * tiles + th * TW;
                for (int r = 0; r < 4; r++) {  // (Bᵀ d) B, tile by tile
                    const float *mr = m[r];
                    float *v0 = v + (size_t)(r * 4 + 0) * CI * T, *v1 = v + (size_t)(r * 4 + 1) * CI * T;
                    float *v2 = v + (size_t)(r * 4 + 2) * CI * T, *v3 = v + (size_t)(r * 4 + 3) * CI * T;
                    for (size_t tw = 0; tw < TW; tw++) {
                        v0[tw] = mr[2 * tw] - mr[2 * tw + 2];
                        v1[tw] = mr[2 * tw + 1] + mr[2 * tw + 2];
                        v2[tw] = mr[2 * tw + 2] - mr[2 * tw + 1];
                        v3[tw] = mr[2 * tw + 1] - mr[2 * tw + 3];
                    }
                }
            }
        }
    }
}

// y of images n0 .. n0+nb-1 from M (16, CO, T): Aᵀ m A per tile, then bias and activation, or added into y.
// Aᵀ runs along the tiles (each M_ξ row contiguous), A then writes each tile's two output columns.
CK_VECTOR static void transform_outputs(float *y, const float *M, size_t nb, const wg_job *j) {
    const wg_geom *g = &j->g;
    const size_t CO = g->CO, H = g->H, W = g->W, TH = g->TH, TW = g->TW, tiles = TH * TW, T = nb * tiles;
    const size_t S = CO * T;  // distance between M_ξ and M_ξ+1
    float a[2][4][TW], out[2][2 * TW];
    for (size_t i = 0; i < nb; i++) {
        for (size_t co = 0; co < CO; co++) {
            float *yc = y + (i * CO + co) * H * W;
            const float b = (!j->accumulate && j->bias) ? j->bias[co] : 0.0f;
            for (size_t th = 0; th < TH; th++) {
                const float *m = M + co * T + i * tiles + th * TW;
                for (int q = 0; q < 4; q++) {  // Aᵀ m
                    const float *m0 = m + (size_t)(0 * 4 + q) * S, *m1 = m + (size_t)(1 * 4 + q) * S;
                    const float *m2 = m + (size_t)(2 * 4 + q) * S, *m3 = m + (size_t)(3 * 4 + q) * S;
                    for (size_t tw = 0; tw < TW; tw++) {
                        a[0][q][tw] = m0[tw] + m1[tw] + m2[tw];
                        a[1][q][tw] = m1[tw] - m2[tw] - m3[tw];
                    }
                }
                for (int r = 0; r < 2; r++) {  // (Aᵀ m) A
                    for (size_t tw = 0; tw < TW; tw++) {
                        out[r][2 * tw] = a[r][0][tw] + a[r][1][tw] + a[r][2][tw];
                        out[r][2 * tw + 1] = a[r][1][tw] - a[r][2][tw] - a[r][3][tw];
                    }
                }
                for (int r = 0; r < 2; r++) {
                    const size_t oh = 2 * th + (size_t)r;
                    if (oh >= H) break;
                    float *dst = yc + oh * W;
                    if (j->accumulate) {
                        for (size_t ow = 0; ow < W; ow++) dst[ow] += out[r][ow];
                    } else {
                        for (size_t ow = 0; ow < W; ow++) dst[ow] = ck_act(out[r][ow] + b, j->act, j->bound);
                    }
                }
            }
        }
    }
}

static void run_part(void *ctx, size_t begin, size_t end, size_t t) {
    const wg_job *j = (const wg_job *)ctx;
    const wg_geom *g = &j->g;
    const size_t CI = g->CI, CO = g->CO, tiles = g->TH * g->TW, HW = g->H * g->W, pf = pack_floats(CO, CI);
    float *V = j->work + t * per_thread_floats(g), *M = V + 16 * CI * g->nb * tiles;
    for (size_t n0 = begin; n0 < end; n0 += g->nb) {
        const size_t nb = ck_min(g->nb, end - n0), T = nb * tiles;
        transform_inputs(V, j->x + n0 * CI * HW, nb, g);
        for (size_t xi = 0; xi < 16; xi++)
            ck_gemm_small(CO, T, CI, j->packs + xi * pf, V + xi * CI * T, T, M + xi * CO * T, T, NULL, CK_ACT_NONE,
                          0.0f, 0);
        transform_outputs(j->y + n0 * CO * HW, M, nb, j);
    }
}

// The 16 packed U_ξ of j's run into j->packs_out (16 * pack_floats(CO, CI) floats).
static void pack_filters(wg_job *j) {
    const size_t pf = pack_floats(j->g.CO, j->g.CI);
    if (j->g.CO % WG_MR) {  // the last panel's rows past CO are zero (transform_filters writes the others)
        const size_t last = (j->g.CO / WG_MR) * j->g.CI * WG_MR;
        for (size_t xi = 0; xi < 16; xi++) memset(j->packs_out + xi * pf + last, 0, j->g.CI * WG_MR * sizeof(float));
    }
    ck_parallel_for(j->g.CO, transform_filters, j);
}

// Transforms the filters into the front of the workspace, then runs the images.
static void run(wg_job *j) {
    j->packs_out = j->work;
    j->packs = j->work;
    j->work = j->work + 16 * pack_floats(j->g.CO, j->g.CI);
    pack_filters(j);
    ck_parallel_for(j->g.N, run_part, j);
}

void ck_conv2d_winograd_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                                const ck_conv2d_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), weight (OC,C,3,3), bias (OC) or NULL -> out (N,OC,H,W); stride 1, padding 1
    wg_job j = {0};
    j.y = out;
    j.work = work;
    j.x = inp;
    j.weight = weight;
    j.bias = bias;
    j.g = geometry(s->N, s->C, s->OC, s->H, s->W);
    j.C = s->C;
    j.OC = s->OC;
    j.act = act;
    j.bound = bound;
    run(&j);
}

void ck_conv2d_winograd_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                       const ck_conv2d_shape *s) {
    // dout (N,OC,H,W), weight (OC,C,3,3) -> dinp (N,C,H,W), added into
    wg_job j = {0};
    j.y = dinp;
    j.work = work;
    j.x = dout;
    j.weight = weight;
    j.g = geometry(s->N, s->OC, s->C, s->H, s->W);
    j.C = s->C;
    j.OC = s->OC;
    j.transposed = 1;
    j.accumulate = 1;
    run(&j);
}

// ---- the filter transform apart, for callers that keep it across calls with unchanged weights ---------------
// (an attack's steps: the weights stay, only the images move). The results are bit for bit those of the entry
// points above: the same packs, the same run.

static wg_job filter_job(float *packs, const float *weight, const ck_conv2d_shape *s, int input_gradient) {
    wg_job j = {0};
    j.packs_out = packs;
    j.weight = weight;
    j.g = input_gradient ? geometry(s->N, s->OC, s->C, s->H, s->W) : geometry(s->N, s->C, s->OC, s->H, s->W);
    j.C = s->C;
    j.OC = s->OC;
    j.transposed = input_gradient;
    return j;
}

size_t ck_winograd_f2x3_filter_floats(const ck_conv2d_shape *s, int input_gradient) {
    return 16 * (input_gradient ? pack_floats(s->C, s->OC) : pack_floats(s->OC, s->C));
}

void ck_winograd_f2x3_filters(float *packs, const float *weight, const ck_conv2d_shape *s, int input_gradient) {
    // weight (OC,C,3,3) -> packs: 16 U_ξ, each (OC, C) (forward) or (C, OC) of the rotated filters (input
    // gradient), in ck_gemm_small's 6-row panels; ck_winograd_f2x3_filter_floats(s, input_gradient) floats.
    wg_job j = filter_job(packs, weight, s, input_gradient);
    pack_filters(&j);
}

void ck_conv2d_winograd_forward_packed(float *out, float *work, const float *packs, const float *inp, const float *bias,
                                       const ck_conv2d_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), packs from ck_winograd_f2x3_filters(.., 0), bias (OC) or NULL -> out (N,OC,H,W)
    wg_job j = {0};
    j.y = out;
    j.work = work;
    j.packs = packs;
    j.x = inp;
    j.bias = bias;
    j.g = geometry(s->N, s->C, s->OC, s->H, s->W);
    j.C = s->C;
    j.OC = s->OC;
    j.act = act;
    j.bound = bound;
    ck_parallel_for(j.g.N, run_part, &j);
}

void ck_conv2d_winograd_backward_input_packed(float *dinp, float *work, const float *packs, const float *dout,
                                              const ck_conv2d_shape *s) {
    // dout (N,OC,H,W), packs from ck_winograd_f2x3_filters(.., 1) -> dinp (N,C,H,W), added into
    wg_job j = {0};
    j.y = dinp;
    j.work = work;
    j.packs = packs;
    j.x = dout;
    j.g = geometry(s->N, s->OC, s->C, s->H, s->W);
    j.C = s->C;
    j.OC = s->OC;
    j.transposed = 1;
    j.accumulate = 1;
    ck_parallel_for(j.g.N, run_part, &j);
}
