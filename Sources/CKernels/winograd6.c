// Winograd's minimal filtering on 6x6 tiles (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// CVPR 2016), for stride-1 convolutions with square 3x3 or 5x5 filters and any padding p <= r - 1:
//
//     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//
// for each m x m output tile, its 6x6 input patch d (zero outside the image) and each r x r filter g, with
// m + r - 1 = 6:
//   - F(4x4, 3x3): 36 multiply-adds per 16 outputs and channel pair instead of 144 (4x fewer; winograd.c's
//     F(2x2, 3x3) saves 2.25x). ResNet's body.
//   - F(2x2, 5x5): 36 instead of 100 per 4 outputs (2.78x fewer). The reference CNN's second convolution
//     (32 -> 64 channels, 12x12 -> 8x8, 84% of its multiply-adds).
// Both use the interpolation points 0, ±1, ±2 and ∞, so they share Bᵀ (the input transform); G and Aᵀ follow
// from the points (Toom-Cook): G's row i is (p_i^0 .. p_i^(r-1)) / Π_(j≠i)(p_i - p_j), Aᵀ's column i is
// (p_i^0 .. p_i^(m-1)), and the point ∞ adds the last row and column. Checked in exact arithmetic against the
// direct sum before they were written here, and by the tests against a Double reference.
//
// Summed over the input channels, each of the 36 positions ξ of a 6x6 transform is one GEMM,
// M_ξ (CO, T) = U_ξ (CO, CI) @ V_ξ (CI, T), over the T tiles of a run of images, on ck_gemm_small (AVX-512).
//
// The input gradient of a stride-1 convolution with padding p is the convolution of dout with the filters
// transposed (OC <-> C), rotated by 180 degrees, and padding r - 1 - p, so it runs the same code, adding into
// dinp. ck_winograd6_applies says per direction whether this route pays: it must save at least half the
// multiply-adds of the direct sum, which a 5x5 input gradient with padding 4 does not (its 12x12 output needs
// 36 tiles, 2.65M multiply-adds against 3.28M in the reference CNN).
//
// Numerics: with points up to ±2 the transforms' values grow by up to 2^3 (Aᵀ) and 5x (Bᵀ) before they cancel, so
// the results differ from the direct sum by float32 roundings of sums ~10-100x the output's size. Measured worst
// errors relative to the outputs' RMS (Winograd6Tests' comment): F(4x4, 3x3) 3.7-5.0e-5, F(2x2, 5x5) 1.0-2.2e-5,
// against 0.9-3.6e-6 for the direct sums; ResNet-18's logits move from 9.4e-7 to 4.3e-6 relative to PyTorch's.
// F(6x6, 3x3) (points ±1/2 too) would lose another decimal, and is not used. Determinism: every output element's
// terms and order depend on the shape only (the GEMM's sum over CI and the transforms), not on the thread count,
// the run of images or which of the two transform paths below took it.
#include "CKernels.h"
#include "internal.h"
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#define W6_MR 6        // ck_gemm_small's panel height
#define W6_COLUMNS 64  // tiles per GEMM (columns of V_ξ)

// ADVKIT_WINOGRAD=4x4 turns this file's route off (A/B measurements): 3x3 convolutions then take winograd.c's
// F(2x2, 3x3) and 5x5 ones the GEMM route. -1 until read.
static int g_enabled = -1;

static int enabled_default(void) {
    const char *v = getenv("ADVKIT_WINOGRAD");
    return !(v && strcmp(v, "4x4") == 0);
}

int ck_winograd6_enabled(void) {
    int on = __atomic_load_n(&g_enabled, __ATOMIC_RELAXED);
    if (on < 0) {
        on = enabled_default();
        __atomic_store_n(&g_enabled, on, __ATOMIC_RELAXED);
    }
    return on;
}

void ck_winograd6_set_enabled(int enabled) {
    __atomic_store_n(&g_enabled, enabled < 0 ? enabled_default() : (enabled ? 1 : 0), __ATOMIC_RELAXED);
}

static size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

int ck_winograd6_applies(const ck_conv2d_shape *s, int input_gradient) {
    if (!ck_gemm_small_available() || !ck_conv_new_routes_enabled() || !ck_winograd6_enabled()) return 0;
    if (s->stride != 1 || s->KH != s->KW || (s->KH != 3 && s->KH != 5) || s->pad >= s->KH) return 0;
    if (s->C < 16 || s->OC < 16) return 0;
    if (s->OH != s->H + 2 * s->pad - s->KH + 1 || s->OW != s->W + 2 * s->pad - s->KW + 1) return 0;
    const size_t m = 7 - s->KH;
    // this direction's output plane: the forward's (OH, OW), the input gradient's (H, W)
    const size_t oh = input_gradient ? s->H : s->OH, ow = input_gradient ? s->W : s->OW;
    // 36 multiply-adds per tile and channel pair against r*r per output pixel of the direct sum
    return 2 * 36 * ceil_div(oh, m) * ceil_div(ow, m) <= s->OH * s->OW * s->KH * s->KW;
}

typedef struct {
    size_t N, CI, CO;   // the run: input (N,CI,H,W) -> output (N,CO,OH,OW)
    size_t H, W, OH, OW;
    size_t r, m, pad;   // filter size, output tile size (7 - r), padding of this run
    size_t TH, TW, nb;  // tiles per column and row of one image; images per GEMM
} w6_geom;

// The run of one direction: the forward (C -> OC, padding p) or the input gradient (OC -> C, padding r - 1 - p).
static w6_geom geometry(const ck_conv2d_shape *s, int input_gradient) {
    w6_geom g = {0};
    g.N = s->N;
    g.r = s->KH;
    g.m = 7 - s->KH;
    if (!input_gradient) {
        g.CI = s->C, g.CO = s->OC, g.H = s->H, g.W = s->W, g.OH = s->OH, g.OW = s->OW, g.pad = s->pad;
    } else {
        g.CI = s->OC, g.CO = s->C, g.H = s->OH, g.W = s->OW, g.OH = s->H, g.OW = s->W, g.pad = s->KH - 1 - s->pad;
    }
    g.TH = ceil_div(g.OH, g.m);
    g.TW = ceil_div(g.OW, g.m);
    const size_t tiles = g.TH * g.TW;
    g.nb = tiles >= W6_COLUMNS ? 1 : ceil_div(W6_COLUMNS, tiles);
    if (g.nb > g.N) g.nb = g.N ? g.N : 1;
    return g;
}

static size_t pack_floats(size_t CO, size_t CI) { return (CO + W6_MR - 1) / W6_MR * W6_MR * CI; }

static size_t tile_ints(const w6_geom *g);

#define W6_LANES 16      // images side by side in a group (one vector lane each)
#define W6_GROUP_TILES 4  // (group, tile) units per GEMM: 64 columns

// Groups side by side, so that a GEMM has W6_GROUP_TILES units even when an image has fewer tiles (ResNet's last
// stage: one tile per image, which alone gave 16-column GEMMs, a quarter of ck_gemm_small's 64-column tile).
static size_t groups_per_block(const w6_geom *g) {
    const size_t tiles = g->TH * g->TW;
    return tiles >= W6_GROUP_TILES ? 1 : ceil_div(W6_GROUP_TILES, tiles);
}

// Columns of V and M: a run of nb images' tiles (the gather path), or W6_GROUP_TILES units of groups of 16 images.
static size_t columns(const w6_geom *g) {
    const size_t run = g->nb * g->TH * g->TW, group = W6_GROUP_TILES * W6_LANES;
    return run > group ? run : group;
}

// The distance between consecutive ξ in V and M: one cache line more than the (rows, T) block. Unpadded, rows * T
// is a multiple of 4 KB (T a multiple of 16 columns, rows of 16 or more channels), so the 36 vectors that a tile's
// transform stores (and the output transform loads) all fell into one L1 set: perf annotate put half of the input
// transform's samples on its six stores and a third of the output transform's on its loads.
#define W6_XI_PAD 16
static inline size_t xi_stride(size_t rows, size_t T) { return rows * T + W6_XI_PAD; }

// Per thread: V (36, CI, T), M (36, CO, T) (ξ apart by xi_stride), the run's tile table (4 int32 per tile; int32
// and float are both 4 bytes), and a block of groups' input and output with the image innermost ((CI, H, W, 16)
// and (CO, OH, OW, 16) per group).
static size_t per_thread_floats(const w6_geom *g) {
    const size_t T = columns(g);
    return 36 * xi_stride(g->CI, T) + 36 * xi_stride(g->CO, T) + 4 * tile_ints(g) +
           groups_per_block(g) * (g->CI * g->H * g->W + g->CO * g->OH * g->OW) * W6_LANES;
}

static size_t direction_floats(const ck_conv2d_shape *s, int input_gradient, size_t threads) {
    const w6_geom g = geometry(s, input_gradient);
    return 36 * pack_floats(g.CO, g.CI) + (threads < 1 ? 1 : threads) * per_thread_floats(&g);
}

size_t ck_winograd6_workspace_floats(const ck_conv2d_shape *s, size_t threads) {
    const size_t f = direction_floats(s, 0, threads), b = direction_floats(s, 1, threads);
    return f > b ? f : b;
}

typedef struct {
    float *y, *work;
    const float *packs;  // the 36 transformed filters run_part reads
    float *packs_out;    // where transform_filters writes them
    const float *x, *weight, *bias;
    w6_geom g;
    size_t C;          // the weight's (OC, C, r, r)
    int transposed;    // 1: the input gradient's filters g'[c][o] = rot180(w[o][c])
    int accumulate;    // 1: y += result (the input gradient); 0: y = act(result + bias)
    ck_activation act;
    float bound;
} w6_job;

// G (6 x r) for the same points, in double (the filters are transformed once per weight).
static double g_entry(size_t i, size_t j, size_t r) {
    static const double points[5] = {0.0, 1.0, -1.0, 2.0, -2.0};
    static const double norm[5] = {4.0, -6.0, -6.0, 24.0, 24.0};  // Π_(k≠i)(p_i - p_k)
    if (i == 5) return j == r - 1 ? 1.0 : 0.0;
    double v = 1.0;
    for (size_t k = 0; k < j; k++) v *= points[i];
    return v / norm[i];
}

// U = G g Gᵀ for output channels [begin, end) of the run, written straight into the 36 packs: U_ξ's (co, ci)
// lands in panel co / 6, row co % 6, column ci.
static void transform_filters(void *ctx, size_t begin, size_t end, size_t t) {
    (void)t;
    const w6_job *j = (const w6_job *)ctx;
    const size_t CI = j->g.CI, CO = j->g.CO, r = j->g.r, pf = pack_floats(CO, CI);
    double G[6][5];
    for (size_t a = 0; a < 6; a++)
        for (size_t b = 0; b < r; b++) G[a][b] = g_entry(a, b, r);
    for (size_t co = begin; co < end; co++) {
        for (size_t ci = 0; ci < CI; ci++) {
            double f[5][5];
            if (!j->transposed) {
                const float *w = j->weight + (co * j->C + ci) * r * r;  // w[o = co][c = ci]
                for (size_t a = 0; a < r; a++)
                    for (size_t b = 0; b < r; b++) f[a][b] = w[a * r + b];
            } else {
                const float *w = j->weight + (ci * j->C + co) * r * r;  // w[o = ci][c = co], rotated
                for (size_t a = 0; a < r; a++)
                    for (size_t b = 0; b < r; b++) f[a][b] = w[(r - 1 - a) * r + (r - 1 - b)];
            }
            double gf[6][5];  // G f
            for (size_t a = 0; a < 6; a++)
                for (size_t b = 0; b < r; b++) {
                    double acc = 0.0;
                    for (size_t k = 0; k < r; k++) acc += G[a][k] * f[k][b];
                    gf[a][b] = acc;
                }
            float *dst = j->packs_out + (co / W6_MR) * CI * W6_MR + ci * W6_MR + co % W6_MR;
            for (size_t a = 0; a < 6; a++)  // (G f) Gᵀ
                for (size_t b = 0; b < 6; b++) {
                    double acc = 0.0;
                    for (size_t k = 0; k < r; k++) acc += gf[a][k] * G[b][k];
                    dst[(a * 6 + b) * pf] = (float)acc;
                }
        }
    }
}

// The input and output transforms run on 16 columns (tiles) at once, one per vector lane: for each of a tile's
// 6x6 pixels a gather brings the 16 tiles' values (masked where the pixel is padding or past the run), the
// transform is a few vector adds, and the 36 results are stored contiguously into V's rows. The output transform
// loads M's rows the same way and scatters each tile's m x m block into the images. A first version walked the
// padded input rows tile by tile (like winograd.c, whose 4x4 tiles are cheap): on the reference CNN's 8x8
// planes (4 tiles per row) its scalar transforms took 44% of a forward pass against 16% for the GEMMs, and the
// 5x5 route was 1.7x slower than the direct GEMM it replaced (perf; advkit-bench forward, 1,024 images).
typedef float w6_vec __attribute__((ext_vector_type(16)));

// Bᵀ for the points 0, ±1, ±2, ∞: o = Bᵀ x (any 6 values of one type: vectors here).
#define W6_BT(o, x)                                                    \
    do {                                                               \
        (o)[0] = 4.0f * (x)[0] - 5.0f * (x)[2] + (x)[4];               \
        (o)[1] = ((x)[3] + (x)[4]) - 4.0f * ((x)[1] + (x)[2]);         \
        (o)[2] = ((x)[4] - (x)[3]) + 4.0f * ((x)[1] - (x)[2]);         \
        (o)[3] = ((x)[4] - (x)[2]) + 2.0f * ((x)[3] - (x)[1]);         \
        (o)[4] = ((x)[4] - (x)[2]) - 2.0f * ((x)[3] - (x)[1]);         \
        (o)[5] = 4.0f * (x)[1] - 5.0f * (x)[3] + (x)[5];               \
    } while (0)

// Aᵀ (m x 6) for the same points: y = Aᵀ x, m = 4 or 2.
#define W6_AT(y, x, m)                                                                   \
    do {                                                                                 \
        const w6_vec s12_ = (x)[1] + (x)[2], d12_ = (x)[1] - (x)[2];                     \
        const w6_vec s34_ = (x)[3] + (x)[4], d34_ = (x)[3] - (x)[4];                     \
        (y)[0] = (x)[0] + s12_ + s34_;                                                   \
        if ((m) == 2) {                                                                  \
            (y)[1] = d12_ + 2.0f * d34_ + (x)[5];                                        \
        } else {                                                                         \
            (y)[1] = d12_ + 2.0f * d34_;                                                 \
            (y)[2] = s12_ + 4.0f * s34_;                                                 \
            (y)[3] = d12_ + 8.0f * d34_ + (x)[5];                                        \
        }                                                                                \
    } while (0)

#if defined(__x86_64__) && defined(__clang__)
#include <immintrin.h>
#define W6_TARGET __attribute__((target("avx512f")))
typedef __mmask16 w6_mask;
// lanes where lo <= v + k < hi
W6_TARGET static inline w6_mask w6_in_range(const int32_t *v, int32_t k, int32_t hi) {
    const __m512i x = _mm512_add_epi32(_mm512_loadu_si512(v), _mm512_set1_epi32(k));
    return _mm512_cmpge_epi32_mask(x, _mm512_setzero_si512()) & _mm512_cmplt_epi32_mask(x, _mm512_set1_epi32(hi));
}
W6_TARGET static inline w6_vec w6_gather(const float *base, const int32_t *idx, int32_t k, w6_mask m) {
    const __m512i i = _mm512_add_epi32(_mm512_loadu_si512(idx), _mm512_set1_epi32(k));
    return (w6_vec)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, i, base, 4);
}
W6_TARGET static inline void w6_scatter(float *base, const int32_t *idx, int32_t k, w6_mask m, w6_vec v) {
    const __m512i i = _mm512_add_epi32(_mm512_loadu_si512(idx), _mm512_set1_epi32(k));
    _mm512_mask_i32scatter_ps(base, m, i, (__m512)v, 4);
}
W6_TARGET static inline w6_vec w6_load(const float *p, w6_mask m) { return (w6_vec)_mm512_maskz_loadu_ps(m, p); }
W6_TARGET static inline void w6_store(float *p, w6_mask m, w6_vec v) { _mm512_mask_storeu_ps(p, m, (__m512)v); }
// dst[i * dst_ld + l] = src[l * src_ld + i] for i, l < 16: a 16x16 block transposed in registers: 16 loads, 64
// shuffles (single elements of row pairs, then pairs of elements of row quadruples, then the 128-bit lanes of the
// four quadruples in two steps), 16 stores.
W6_TARGET static inline void w6_transpose16(float *dst, size_t dst_ld, const float *src, size_t src_ld) {
    __m512 r[16], t[16];
    for (int l = 0; l < 16; l++) r[l] = _mm512_loadu_ps(src + (size_t)l * src_ld);
    for (int l = 0; l < 16; l += 2) {  // 2x2 blocks of single elements
        t[l] = _mm512_unpacklo_ps(r[l], r[l + 1]);
        t[l + 1] = _mm512_unpackhi_ps(r[l], r[l + 1]);
    }
    for (int l = 0; l < 16; l += 4) {  // pairs of elements
        for (int k = 0; k < 2; k++) {
            r[l + k] = (__m512)_mm512_unpacklo_pd((__m512d)t[l + k], (__m512d)t[l + k + 2]);
            r[l + k + 2] = (__m512)_mm512_unpackhi_pd((__m512d)t[l + k], (__m512d)t[l + k + 2]);
        }
    }
    // Now r[l] holds, in each 128-bit lane q, 4 consecutive elements of rows l & ~3 ... + 3 for one column
    // quadruple; exchange the 128-bit lanes between the four groups of four rows.
    for (int l = 0; l < 4; l++) {
        const __m512 a = r[l], b = r[l + 4], c = r[l + 8], d = r[l + 12];
        const __m512 ab_lo = _mm512_shuffle_f32x4(a, b, 0x44), ab_hi = _mm512_shuffle_f32x4(a, b, 0xEE);
        const __m512 cd_lo = _mm512_shuffle_f32x4(c, d, 0x44), cd_hi = _mm512_shuffle_f32x4(c, d, 0xEE);
        t[l] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);
        t[l + 4] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xDD);
        t[l + 8] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);
        t[l + 12] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xDD);
    }
    // t[4 q + l]: column 4 q + (l's position in the 2x2 unpack order).
    static const int column[4] = {0, 2, 1, 3};
    for (int q = 0; q < 4; q++)
        for (int l = 0; l < 4; l++) _mm512_storeu_ps(dst + (size_t)(4 * q + column[l]) * dst_ld, t[4 * q + l]);
}
#define W6_HAVE_TRANSPOSE16 1
#else
// Without AVX-512 the route never applies (ck_winograd6_applies); the entry points stay correct with these.
#define W6_TARGET
typedef uint32_t w6_mask;
static inline w6_mask w6_in_range(const int32_t *v, int32_t k, int32_t hi) {
    w6_mask m = 0;
    for (int l = 0; l < 16; l++) m |= (w6_mask)(v[l] + k >= 0 && v[l] + k < hi) << l;
    return m;
}
static inline w6_vec w6_gather(const float *base, const int32_t *idx, int32_t k, w6_mask m) {
    w6_vec v = 0.0f;
    for (int l = 0; l < 16; l++)
        if (m >> l & 1) v[l] = base[idx[l] + k];
    return v;
}
static inline void w6_scatter(float *base, const int32_t *idx, int32_t k, w6_mask m, w6_vec v) {
    for (int l = 0; l < 16; l++)
        if (m >> l & 1) base[idx[l] + k] = v[l];
}
static inline w6_vec w6_load(const float *p, w6_mask m) {
    w6_vec v = 0.0f;
    for (int l = 0; l < 16; l++)
        if (m >> l & 1) v[l] = p[l];
    return v;
}
static inline void w6_store(float *p, w6_mask m, w6_vec v) {
    for (int l = 0; l < 16; l++)
        if (m >> l & 1) p[l] = v[l];
}
#endif

static inline w6_mask w6_live(size_t lanes) { return lanes >= 16 ? (w6_mask)0xFFFF : (w6_mask)((1u << lanes) - 1); }

// A forward output's bias and fused activation (ck_act's rule: a NaN becomes 0).
W6_TARGET static inline w6_vec w6_bias_act(w6_vec v, w6_vec bias, ck_activation act, float bound) {
    v += bias;
    if (act != CK_ACT_NONE) v = __builtin_elementwise_max(v, (w6_vec)0.0f);
    if (act == CK_ACT_BRELU) v = __builtin_elementwise_min(v, (w6_vec)bound);
    return v;
}

// The first half of an output transform, one output channel and 16 columns: a[r][q] = (Aᵀ m)[r][q] for r < m, from
// the 36 values of each column in M (mc: this channel's first column, ξ rows S apart). Both output transforms.
W6_TARGET static inline void w6_output_rows(w6_vec a[4][6], const float *mc, size_t S, w6_mask live, size_t m) {
    for (int q = 0; q < 6; q++) {
        w6_vec x[6], o[4];
        for (int k = 0; k < 6; k++) x[k] = w6_load(mc + (size_t)(k * 6 + q) * S, live);
        W6_AT(o, x, m);
        for (size_t r = 0; r < m; r++) a[r][q] = o[r];
    }
}

// Where a run's T tiles sit (column t = i * TH*TW + th * TW + tw of V and M), as int32 for the gathers, padded
// to a multiple of 16: the first input row and column of the tile's 6x6 patch (may be negative: padding), the
// offset of its top-left pixel in image i's channel 0 (input), and of its top-left output (output).
typedef struct { int32_t *row, *col, *in, *out; } w6_tiles;

static size_t tile_ints(const w6_geom *g) { return (g->nb * g->TH * g->TW + 15) / 16 * 16; }

static void locate_tiles(w6_tiles *p, size_t nb, const w6_geom *g) {
    const size_t n = tile_ints(g);
    size_t t = 0;
    for (size_t i = 0; i < nb; i++)
        for (size_t th = 0; th < g->TH; th++)
            for (size_t tw = 0; tw < g->TW; tw++, t++) {
                const long r = (long)(g->m * th) - (long)g->pad, c = (long)(g->m * tw) - (long)g->pad;
                p->row[t] = (int32_t)r;
                p->col[t] = (int32_t)c;
                p->in[t] = (int32_t)((long)(i * g->CI * g->H * g->W) + r * (long)g->W + c);
                p->out[t] = (int32_t)(i * g->CO * g->OH * g->OW + g->m * th * g->OW + g->m * tw);
            }
    for (; t < n; t++) p->row[t] = p->col[t] = p->in[t] = p->out[t] = (int32_t)1 << 30;  // never in range
}

// V (36, CI, T) = Bᵀ d B of every tile and input channel of the run starting at x.
W6_TARGET static void transform_inputs(float *V, const float *x, size_t T, const w6_geom *g, const w6_tiles *p) {
    const size_t CI = g->CI, HW = g->H * g->W;
    const int32_t H = (int32_t)g->H, W = (int32_t)g->W;
    for (size_t t0 = 0; t0 < T; t0 += 16) {
        const w6_mask live = w6_live(T - t0);
        w6_mask rows[6], cols[6], mask[36];
        for (int k = 0; k < 6; k++) {
            rows[k] = live & w6_in_range(p->row + t0, k, H);
            cols[k] = w6_in_range(p->col + t0, k, W);
        }
        for (int k = 0; k < 6; k++)
            for (int q = 0; q < 6; q++) mask[k * 6 + q] = rows[k] & cols[q];
        for (size_t c = 0; c < CI; c++) {
            const float *xc = x + c * HW;
            w6_vec e[6][6];  // e[k'][q] = (Bᵀ d)[k'][q]
            for (int q = 0; q < 6; q++) {
                w6_vec d[6], o[6];
                for (int k = 0; k < 6; k++) d[k] = w6_gather(xc, p->in + t0, k * W + q, mask[k * 6 + q]);
                W6_BT(o, d);
                for (int k = 0; k < 6; k++) e[k][q] = o[k];
            }
            float *v = V + c * T + t0;
            for (int k = 0; k < 6; k++) {  // (Bᵀ d) B
                w6_vec o[6];
                W6_BT(o, e[k]);
                for (int q = 0; q < 6; q++) w6_store(v + (size_t)(k * 6 + q) * xi_stride(CI, T), live, o[q]);
            }
        }
    }
}

// y (the run's images, (nb, CO, OH, OW)) from M (36, CO, T): Aᵀ m A per tile, then bias and activation, or
// added into y.
W6_TARGET static void transform_outputs(float *y, const float *M, size_t T, const w6_job *j, const w6_tiles *p) {
    const w6_geom *g = &j->g;
    const size_t CO = g->CO, OHW = g->OH * g->OW, S = xi_stride(CO, T), m = g->m;
    const int32_t OH = (int32_t)g->OH, OW = (int32_t)g->OW;
    for (size_t t0 = 0; t0 < T; t0 += 16) {
        const w6_mask live = w6_live(T - t0);
        w6_mask mask[4][4];
        for (size_t a = 0; a < m; a++)
            for (size_t b = 0; b < m; b++)  // output row m th + a and column m tw + b inside the plane
                mask[a][b] = live & w6_in_range(p->row + t0, (int32_t)(a + g->pad), OH) &
                             w6_in_range(p->col + t0, (int32_t)(b + g->pad), OW);
        for (size_t co = 0; co < CO; co++) {
            w6_vec a[4][6];  // a[p][q] = (Aᵀ m)[p][q]
            w6_output_rows(a, M + co * T + t0, S, live, m);
            const w6_vec bias = (!j->accumulate && j->bias) ? j->bias[co] : 0.0f;
            float *yc = y + co * OHW;
            for (size_t r = 0; r < m; r++) {  // (Aᵀ m) A
                w6_vec z[4];
                W6_AT(z, a[r], m);
                for (size_t b = 0; b < m; b++) {
                    const int32_t at = (int32_t)(r * g->OW + b);
                    const w6_vec v = j->accumulate ? z[b] + w6_gather(yc, p->out + t0, at, mask[r][b])
                                                   : w6_bias_act(z[b], bias, j->act, j->bound);
                    w6_scatter(yc, p->out + t0, at, mask[r][b], v);
                }
            }
        }
    }
}

// A group of 16 images, the image in the vector lane. Its input is first transposed so that the image is
// innermost (X16: (CI, H, W, 16)); a tile's 36 pixels are then 36 contiguous vector loads, where the gather path
// needs 36 gathers per 16 tiles, and each pixel is moved once, not (6/m)^2 times. The columns of V and M are
// (tile, image); the results are stored the same way (Y16: (CO, OH, OW, 16)) and transposed back at the end.
// (Stored straight into the 16 images instead, each vector's lanes are CO*OH*OW floats apart, 16 KB in the
// reference CNN: they fall into one L1 set, and that version spent 19% of a forward pass on those stores.)
// The arithmetic of every column is the gather path's, so the two give the same bits and a batch may mix them.

// X16[e * 16 + l] = x[l * stride + e] for e < E, in blocks of 16 elements (reads and writes stay in a few lines).
W6_TARGET static void to_lanes(float *X16, const float *x, size_t E, size_t stride) {
    size_t e0 = 0;
#ifdef W6_HAVE_TRANSPOSE16
    // perf: the scalar loop below was 7% of ResNet-18's PGD-10 (run_part), its 16 source rows a power of two
    // apart (a 64 x 32 x 32 image is 256 KB).
    for (; e0 + 16 <= E; e0 += 16) w6_transpose16(X16 + e0 * W6_LANES, W6_LANES, x + e0, stride);
#endif
    for (; e0 < E; e0 += 16) {
        const size_t n = ck_min(16, E - e0);
        for (size_t l = 0; l < W6_LANES; l++) {
            const float *src = x + l * stride + e0;
#pragma clang loop vectorize(disable)
            for (size_t i = 0; i < n; i++) X16[(e0 + i) * W6_LANES + l] = src[i];
        }
    }
}

// y[l * stride + e] = (or +=) Y16[e * 16 + l] for e < E.
W6_TARGET static void from_lanes(float *y, const float *Y16, size_t E, size_t stride, int accumulate) {
    size_t e0 = 0;
#ifdef W6_HAVE_TRANSPOSE16
    if (!accumulate) {
        for (; e0 + 16 <= E; e0 += 16) w6_transpose16(y + e0, stride, Y16 + e0 * W6_LANES, W6_LANES);
    } else {
        float block[16 * 16];
        for (; e0 + 16 <= E; e0 += 16) {
            w6_transpose16(block, 16, Y16 + e0 * W6_LANES, W6_LANES);
            for (size_t l = 0; l < W6_LANES; l++) {
                float *dst = y + l * stride + e0;
                _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), _mm512_loadu_ps(block + 16 * l)));
            }
        }
    }
#endif
    for (; e0 < E; e0 += 16) {
        const size_t n = ck_min(16, E - e0);
        for (size_t l = 0; l < W6_LANES; l++) {
            float *dst = y + l * stride + e0;
            if (accumulate) {
#pragma clang loop vectorize(disable)
                for (size_t i = 0; i < n; i++) dst[i] += Y16[(e0 + i) * W6_LANES + l];
            } else {
#pragma clang loop vectorize(disable)
                for (size_t i = 0; i < n; i++) dst[i] = Y16[(e0 + i) * W6_LANES + l];
            }
        }
    }
}

// Units [unit0, unit0 + uc) of a block: unit = group * tiles + tile; X16 holds the block's groups one after another.
W6_TARGET static void group_inputs(float *V, const float *X16, size_t unit0, size_t uc, const w6_geom *g) {
    const size_t CI = g->CI, H = g->H, W = g->W, T = uc * W6_LANES, tiles = g->TH * g->TW;
    const w6_mask all = w6_live(W6_LANES);
    for (size_t u = 0; u < uc; u++) {
        const size_t group = (unit0 + u) / tiles, tile = (unit0 + u) % tiles, th = tile / g->TW, tw = tile % g->TW;
        const float *xg = X16 + group * CI * H * W * W6_LANES;
        const long r0 = (long)(g->m * th) - (long)g->pad, c0 = (long)(g->m * tw) - (long)g->pad;
        int ok[6][6];
        for (int k = 0; k < 6; k++)
            for (int q = 0; q < 6; q++)
                ok[k][q] = r0 + k >= 0 && r0 + k < (long)H && c0 + q >= 0 && c0 + q < (long)W;
        for (size_t c = 0; c < CI; c++) {
            const float *xc = xg + c * H * W * W6_LANES;
            w6_vec e[6][6];
            for (int q = 0; q < 6; q++) {
                w6_vec d[6], o[6];
                for (int k = 0; k < 6; k++)
                    d[k] = ok[k][q] ? w6_load(xc + ((size_t)(r0 + k) * W + (size_t)(c0 + q)) * W6_LANES, all)
                                    : (w6_vec)0.0f;
                W6_BT(o, d);
                for (int k = 0; k < 6; k++) e[k][q] = o[k];
            }
            float *v = V + c * T + u * W6_LANES;
            for (int k = 0; k < 6; k++) {
                w6_vec o[6];
                W6_BT(o, e[k]);
                for (int q = 0; q < 6; q++) w6_store(v + (size_t)(k * 6 + q) * xi_stride(CI, T), all, o[q]);
            }
        }
    }
}

W6_TARGET static void group_outputs(float *Y16, const float *M, size_t unit0, size_t uc, const w6_job *j) {
    const w6_geom *g = &j->g;
    const size_t CO = g->CO, OH = g->OH, OW = g->OW, OHW = OH * OW, m = g->m, T = uc * W6_LANES;
    const size_t S = xi_stride(CO, T);
    const size_t tiles = g->TH * g->TW;
    const w6_mask all = w6_live(W6_LANES);
    for (size_t u = 0; u < uc; u++) {
        const size_t group = (unit0 + u) / tiles, tile = (unit0 + u) % tiles, th = tile / g->TW, tw = tile % g->TW;
        float *yg = Y16 + group * CO * OHW * W6_LANES;
        for (size_t co = 0; co < CO; co++) {
            w6_vec a[4][6];
            w6_output_rows(a, M + co * T + u * W6_LANES, S, all, m);
            const w6_vec bias = (!j->accumulate && j->bias) ? j->bias[co] : 0.0f;
            float *yc = yg + co * OHW * W6_LANES;
            for (size_t r = 0; r < m && m * th + r < OH; r++) {
                w6_vec z[4];
                W6_AT(z, a[r], m);
                for (size_t b = 0; b < m && m * tw + b < OW; b++) {
                    const w6_vec v = j->accumulate ? z[b] : w6_bias_act(z[b], bias, j->act, j->bound);
                    w6_store(yc + ((m * th + r) * OW + m * tw + b) * W6_LANES, all, v);
                }
            }
        }
    }
}

// The 36 GEMMs of one batch of T columns: M_ξ (CO, T) = U_ξ (CO, CI) @ V_ξ (CI, T).
static void multiply(float *M, const float *V, size_t T, const w6_job *j) {
    const size_t CI = j->g.CI, CO = j->g.CO, pf = pack_floats(CO, CI);
    for (size_t xi = 0; xi < 36; xi++)
        ck_gemm_small(CO, T, CI, j->packs + xi * pf, V + xi * xi_stride(CI, T), T, M + xi * xi_stride(CO, T), T, NULL,
                      CK_ACT_NONE, 0.0f, 0);
}

static void run_part(void *ctx, size_t begin, size_t end, size_t t) {
    const w6_job *j = (const w6_job *)ctx;
    const w6_geom *g = &j->g;
    const size_t CI = g->CI, CO = g->CO, tiles = g->TH * g->TW, Tmax = columns(g), ti = tile_ints(g);
    const size_t in_plane = g->H * g->W, out_plane = g->OH * g->OW;
    float *V = j->work + t * per_thread_floats(g), *M = V + 36 * xi_stride(CI, Tmax);
    int32_t *ints = (int32_t *)(M + 36 * xi_stride(CO, Tmax));
    float *X16 = (float *)(ints + 4 * ti), *Y16 = X16 + groups_per_block(g) * CI * in_plane * W6_LANES;
    w6_tiles p = {ints, ints + ti, ints + 2 * ti, ints + 3 * ti};
    size_t located = 0;  // images the tile table was made for
    size_t n0 = begin;
    const size_t max_groups = groups_per_block(g);
    while (end - n0 >= W6_LANES) {  // blocks of up to max_groups groups of 16 images
        const size_t groups = ck_min(max_groups, (end - n0) / W6_LANES), units = groups * tiles;
        for (size_t gi = 0; gi < groups; gi++)
            to_lanes(X16 + gi * CI * in_plane * W6_LANES, j->x + (n0 + gi * W6_LANES) * CI * in_plane, CI * in_plane,
                     CI * in_plane);
        for (size_t unit0 = 0; unit0 < units; unit0 += W6_GROUP_TILES) {
            const size_t uc = ck_min(W6_GROUP_TILES, units - unit0);
            group_inputs(V, X16, unit0, uc, g);
            multiply(M, V, uc * W6_LANES, j);
            group_outputs(Y16, M, unit0, uc, j);
        }
        for (size_t gi = 0; gi < groups; gi++)
            from_lanes(j->y + (n0 + gi * W6_LANES) * CO * out_plane, Y16 + gi * CO * out_plane * W6_LANES,
                       CO * out_plane, CO * out_plane, j->accumulate);
        n0 += groups * W6_LANES;
    }
    for (; n0 < end; n0 += g->nb) {  // the rest: runs of nb images, tiles in the lanes
        const size_t nb = ck_min(g->nb, end - n0), T = nb * tiles;
        if (nb != located) {
            locate_tiles(&p, nb, g);
            located = nb;
        }
        transform_inputs(V, j->x + n0 * CI * in_plane, T, g, &p);
        multiply(M, V, T, j);
        transform_outputs(j->y + n0 * CO * out_plane, M, T, j, &p);
    }
}

static w6_job make_job(const ck_conv2d_shape *s, int input_gradient) {
    w6_job j = {0};
    j.g = geometry(s, input_gradient);
    j.C = s->C;
    j.transposed = input_gradient;
    j.accumulate = input_gradient;
    return j;
}

// The 36 packed U_ξ of j's run into j->packs_out (36 * pack_floats(CO, CI) floats).
static void pack_filters(w6_job *j) {
    const size_t pf = pack_floats(j->g.CO, j->g.CI);
    if (j->g.CO % W6_MR) {  // the last panel's rows past CO are zero (transform_filters writes the others)
        const size_t last = (j->g.CO / W6_MR) * j->g.CI * W6_MR;
        for (size_t xi = 0; xi < 36; xi++) memset(j->packs_out + xi * pf + last, 0, j->g.CI * W6_MR * sizeof(float));
    }
    ck_parallel_for(j->g.CO, transform_filters, j);
}

size_t ck_winograd6_filter_floats(const ck_conv2d_shape *s, int input_gradient) {
    const w6_geom g = geometry(s, input_gradient);
    return 36 * pack_floats(g.CO, g.CI);
}

void ck_winograd6_filters(float *packs, const float *weight, const ck_conv2d_shape *s, int input_gradient) {
    // weight (OC,C,r,r) -> packs: 36 U_ξ, each (OC, C) (forward) or (C, OC) of the rotated filters (input
    // gradient), in ck_gemm_small's 6-row panels; ck_winograd6_filter_floats(s, input_gradient) floats.
    w6_job j = make_job(s, input_gradient);
    j.packs_out = packs;
    j.weight = weight;
    pack_filters(&j);
}

void ck_conv2d_winograd6_forward_packed(float *out, float *work, const float *packs, const float *inp,
                                        const float *bias, const ck_conv2d_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), packs from ck_winograd6_filters(.., 0), bias (OC) or NULL -> out (N,OC,OH,OW)
    w6_job j = make_job(s, 0);
    j.y = out;
    j.work = work;
    j.packs = packs;
    j.x = inp;
    j.bias = bias;
    j.act = act;
    j.bound = bound;
    ck_parallel_for(j.g.N, run_part, &j);
}

void ck_conv2d_winograd6_backward_input_packed(float *dinp, float *work, const float *packs, const float *dout,
                                               const ck_conv2d_shape *s) {
    // dout (N,OC,OH,OW), packs from ck_winograd6_filters(.., 1) -> dinp (N,C,H,W), added into
    w6_job j = make_job(s, 1);
    j.y = dinp;
    j.work = work;
    j.packs = packs;
    j.x = dout;
    ck_parallel_for(j.g.N, run_part, &j);
}

void ck_conv2d_winograd6_forward(float *out, float *work, const float *inp, const float *weight, const float *bias,
                                 const ck_conv2d_shape *s, ck_activation act, float bound) {
    // inp (N,C,H,W), weight (OC,C,r,r), bias (OC) or NULL -> out (N,OC,OH,OW); the filters go to work's front
    ck_winograd6_filters(work, weight, s, 0);
    ck_conv2d_winograd6_forward_packed(out, work + ck_winograd6_filter_floats(s, 0), work, inp, bias, s, act, bound);
}

void ck_conv2d_winograd6_backward_input(float *dinp, float *work, const float *dout, const float *weight,
                                        const ck_conv2d_shape *s) {
    // dout (N,OC,OH,OW), weight (OC,C,r,r) -> dinp (N,C,H,W), added into; the filters go to work's front
    ck_winograd6_filters(work, weight, s, 1);
    ck_conv2d_winograd6_backward_input_packed(dinp, work + ck_winograd6_filter_floats(s, 1), work, dout, s);
}
