// Single-pass multi-expert blending (MoE-GS Eq. 9). One tile list holds every expert's
// Gaussians sorted by depth; each pixel keeps a transmittance and an accumulator per expert,
// so expert k's output is exactly its own front-to-back blend (gsplat 1.5.3's forward maths:
// pixel centres at +0.5, alpha = min(0.999, o exp(-sigma)), skip alpha < 1/255 or sigma < 0,
// stop an expert before the Gaussian that brings its transmittance to <= 1e-4). A tile stops
// only when every pixel has spent every expert's transmittance.
// The backward gives the gradient w.r.t. the per-Gaussian values only (colours and router
// channels): geometry is frozen, so the blend weights T·alpha are constants of the values.

#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>

namespace cg = cooperative_groups;

namespace {

constexpr float ALPHA_THRESHOLD = 1.f / 255.f;
constexpr float T_MIN = 1e-4f;
constexpr int TILE = 16;
constexpr int BLOCK = TILE * TILE;

// blocks per SM the register budget must allow: 64 registers a thread for small accumulators
// (gsplat's kernel needs few; without a bound the compiler takes ~100 and halves occupancy)
constexpr int min_blocks(int K, int D) { return K * D <= 16 ? 4 : (K * D <= 32 ? 3 : 1); }

struct TileRange {
    int start, end;
};

__device__ inline TileRange tile_range(const int32_t *offsets, int cam, int C, int tile_id, int n_tiles,
                                       int n_isects) {
    const int32_t *o = offsets + cam * n_tiles;
    int end = (cam == C - 1 && tile_id == n_tiles - 1) ? n_isects : o[tile_id + 1];
    return {o[tile_id], end};
}

// alpha of Gaussian (xy, opacity, conic) at pixel centre (px, py); < 0 when it is skipped
__device__ inline float pixel_alpha(float3 xy_opac, float3 conic, float px, float py) {
    const float dx = xy_opac.x - px, dy = xy_opac.y - py;
    const float sigma = 0.5f * (conic.x * dx * dx + conic.z * dy * dy) + conic.y * dx * dy;
    const float alpha = fminf(0.999f, xy_opac.z * __expf(-sigma));
    return (sigma < 0.f || alpha < ALPHA_THRESHOLD) ? -1.f : alpha;
}

template <int K, int D>
__global__ void __launch_bounds__(BLOCK, min_blocks(K, D)) single_pass_fwd(const int C, const int N, const int n_isects,
                                const float2 *__restrict__ means2d,     // [C,N,2]
                                const float3 *__restrict__ conics,      // [C,N,3]
                                const float *__restrict__ opacities,    // [N]
                                const int32_t *__restrict__ expert_ids, // [N]
                                const float *__restrict__ values,       // [C,N,D], channel D-1 unused
                                const float *__restrict__ depths,       // [C,N]: the last channel
                                const float *__restrict__ backgrounds,  // [K,C,D]
                                const int W, const int H, const int tw, const int th,
                                const int32_t *__restrict__ tile_offsets, // [C,th,tw]
                                const int32_t *__restrict__ flatten_ids,  // [n_isects]
                                float *__restrict__ out,                   // [K,C,H,W,D]
                                float *__restrict__ alphas) {              // [K,C,H,W]
    auto block = cg::this_thread_block();
    const int cam = blockIdx.x, tile_id = blockIdx.y * tw + blockIdx.z;
    const int i = blockIdx.y * TILE + threadIdx.y, j = blockIdx.z * TILE + threadIdx.x;
    const float px = j + 0.5f, py = i + 0.5f;
    const bool inside = i < H && j < W;
    const uint32_t full = (1u << K) - 1u;
    uint32_t spent = inside ? 0u : full;  // bit k: expert k's transmittance is spent

    const TileRange r = tile_range(tile_offsets, cam, C, tile_id, tw * th, n_isects);
    const int n_batches = (r.end - r.start + BLOCK - 1) / BLOCK;

    __shared__ float4 xy_opac_batch[BLOCK];  // x, y, opacity, expert id (bits)
    __shared__ float3 conic_batch[BLOCK];
    __shared__ float4 value_batch[BLOCK * D / 4];  // the values beside the geometry: broadcast reads

    float T[K];
    float acc[K][D];
#pragma unroll
    for (int k = 0; k < K; ++k) {
        T[k] = 1.f;
#pragma unroll
        for (int d = 0; d < D; ++d) acc[k][d] = 0.f;
    }
    const int tr = block.thread_rank();
    for (int b = 0; b < n_batches; ++b) {
        if (__syncthreads_count(spent == full) >= BLOCK) break;  // also guards the shared batch
        const int idx = r.start + b * BLOCK + tr;
        if (idx < r.end) {
            const int32_t g = flatten_ids[idx];
            const int32_t n = g - cam * N;
            const float2 xy = means2d[g];
            xy_opac_batch[tr] = make_float4(xy.x, xy.y, opacities[n], __int_as_float(expert_ids[n]));
            conic_batch[tr] = conics[g];
            const float4 *v = reinterpret_cast<const float4 *>(values + (int64_t)g * D);
#pragma unroll
            for (int q = 0; q < D / 4; ++q) value_batch[tr * (D / 4) + q] = v[q];
            reinterpret_cast<float *>(value_batch + tr * (D / 4))[D - 1] = depths[g];
        }
        block.sync();
        const int batch = min(BLOCK, r.end - (r.start + b * BLOCK));
        for (int t = 0; t < batch && spent != full; ++t) {
            const float4 xyoe = xy_opac_batch[t];
            const int e = __float_as_int(xyoe.w);
            if ((spent >> e) & 1u) continue;
            const float alpha = pixel_alpha(make_float3(xyoe.x, xyoe.y, xyoe.z), conic_batch[t], px, py);
            if (alpha < 0.f) continue;
            const float *v = reinterpret_cast<const float *>(value_batch + t * (D / 4));
#pragma unroll
            for (int k = 0; k < K; ++k) {
                if (k != e) continue;
                const float next_T = T[k] * (1.f - alpha);
                if (next_T <= T_MIN) {
                    spent |= 1u << k;
                } else {
                    const float vis = alpha * T[k];
#pragma unroll
                    for (int d = 0; d < D; ++d) acc[k][d] += v[d] * vis;
                    T[k] = next_T;
                }
            }
        }
    }
    if (!inside) return;
    const int64_t pix = ((int64_t)cam * H + i) * W + j;
    const int64_t image = (int64_t)C * H * W;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        alphas[k * image + pix] = 1.f - T[k];
        const float *bg = backgrounds + ((int64_t)k * C + cam) * D;
#pragma unroll
        for (int d = 0; d < D; ++d) out[(k * image + pix) * D + d] = acc[k][d] + T[k] * bg[d];
    }
}

template <int K, int D>
__global__ void __launch_bounds__(BLOCK, min_blocks(K, D)) single_pass_bwd(const int C, const int N, const int n_isects,
                                const float2 *__restrict__ means2d, const float3 *__restrict__ conics,
                                const float *__restrict__ opacities, const int32_t *__restrict__ expert_ids,
                                const int W, const int H, const int tw, const int th,
                                const int32_t *__restrict__ tile_offsets, const int32_t *__restrict__ flatten_ids,
                                const float *__restrict__ grad_out,  // [K,C,H,W,D]
                                const int g0, const int g1,          // channels [g0, g1) need gradients
                                float *__restrict__ grad_values) {   // [C,N,D]
    auto block = cg::this_thread_block();
    auto warp = cg::tiled_partition<32>(block);
    const int cam = blockIdx.x, tile_id = blockIdx.y * tw + blockIdx.z;
    const int i = blockIdx.y * TILE + threadIdx.y, j = blockIdx.z * TILE + threadIdx.x;
    const float px = j + 0.5f, py = i + 0.5f;
    const bool inside = i < H && j < W;
    const uint32_t full = (1u << K) - 1u;
    uint32_t spent = inside ? 0u : full;

    const TileRange r = tile_range(tile_offsets, cam, C, tile_id, tw * th, n_isects);
    const int n_batches = (r.end - r.start + BLOCK - 1) / BLOCK;

    __shared__ int32_t id_batch[BLOCK];
    __shared__ float4 xy_opac_batch[BLOCK];  // x, y, opacity, expert id (bits)
    __shared__ float3 conic_batch[BLOCK];

    float T[K];
    float grad[K][D];
    const int64_t pix = ((int64_t)cam * H + i) * W + j;
    const int64_t image = (int64_t)C * H * W;
#pragma unroll
    for (int k = 0; k < K; ++k) {
        T[k] = 1.f;
#pragma unroll
        for (int d = 0; d < D; ++d) grad[k][d] = inside ? grad_out[(k * image + pix) * D + d] : 0.f;
    }
    const int tr = block.thread_rank();
    for (int b = 0; b < n_batches; ++b) {
        if (__syncthreads_count(spent == full) >= BLOCK) break;
        const int idx = r.start + b * BLOCK + tr;
        if (idx < r.end) {
            const int32_t g = flatten_ids[idx];
            const int32_t n = g - cam * N;
            id_batch[tr] = g;
            const float2 xy = means2d[g];
            xy_opac_batch[tr] = make_float4(xy.x, xy.y, opacities[n], __int_as_float(expert_ids[n]));
            conic_batch[tr] = conics[g];
        }
        block.sync();
        const int batch = min(BLOCK, r.end - (r.start + b * BLOCK));
        for (int t = 0; t < batch; ++t) {  // every lane walks every Gaussian: warp reductions below
            const float4 xyoe = xy_opac_batch[t];
            const int e = __float_as_int(xyoe.w);
            float contrib[D];
            bool valid = false;
#pragma unroll
            for (int d = 0; d < D; ++d) contrib[d] = 0.f;
            if (!((spent >> e) & 1u)) {
                const float alpha = pixel_alpha(make_float3(xyoe.x, xyoe.y, xyoe.z), conic_batch[t], px, py);
                if (alpha >= 0.f) {
#pragma unroll
                    for (int k = 0; k < K; ++k) {
                        if (k != e) continue;
                        const float next_T = T[k] * (1.f - alpha);
                        if (next_T <= T_MIN) {
                            spent |= 1u << k;
                        } else {
                            const float vis = alpha * T[k];
#pragma unroll
                            for (int d = 0; d < D; ++d) contrib[d] = vis * grad[k][d];
                            T[k] = next_T;
                            valid = true;
                        }
                    }
                }
            }
            if (!warp.any(valid)) continue;
            float *gv = grad_values + (int64_t)id_batch[t] * D;
#pragma unroll
            for (int d = 0; d < D; ++d) {
                if (d < g0 || d >= g1) continue;  // warp-uniform: no gradient wanted there
                const float s = cg::reduce(warp, contrib[d], cg::plus<float>());
                if (warp.thread_rank() == 0) atomicAdd(gv + d, s);
            }
        }
    }
}

template <int K, int D>
void launch(const torch::Tensor &means2d, const torch::Tensor &conics, const torch::Tensor &opacities,
            const torch::Tensor &expert_ids, const torch::Tensor &values, const torch::Tensor &depths,
            const torch::Tensor &backgrounds, const torch::Tensor &tile_offsets, const torch::Tensor &flatten_ids, int W, int H,
            torch::Tensor &out, torch::Tensor &alphas, const torch::Tensor *grad_out, int g0, int g1,
            torch::Tensor *grad_values) {
    const int C = means2d.size(0), N = means2d.size(1), th = tile_offsets.size(1), tw = tile_offsets.size(2);
    const int n_isects = flatten_ids.size(0);
    const dim3 grid(C, th, tw), threads(TILE, TILE, 1);
    auto stream = at::cuda::getCurrentCUDAStream();
    if (C == 0 || th == 0 || tw == 0) return;
    auto m2 = reinterpret_cast<const float2 *>(means2d.data_ptr<float>());
    auto co = reinterpret_cast<const float3 *>(conics.data_ptr<float>());
    if (grad_out == nullptr) {
        single_pass_fwd<K, D><<<grid, threads, 0, stream>>>(
            C, N, n_isects, m2, co, opacities.data_ptr<float>(), expert_ids.data_ptr<int32_t>(),
            values.data_ptr<float>(), depths.data_ptr<float>(), backgrounds.data_ptr<float>(), W, H, tw, th,
            tile_offsets.data_ptr<int32_t>(), flatten_ids.data_ptr<int32_t>(), out.data_ptr<float>(),
            alphas.data_ptr<float>());
    } else {
        single_pass_bwd<K, D><<<grid, threads, 0, stream>>>(
            C, N, n_isects, m2, co, opacities.data_ptr<float>(), expert_ids.data_ptr<int32_t>(), W, H, tw, th,
            tile_offsets.data_ptr<int32_t>(), flatten_ids.data_ptr<int32_t>(), grad_out->data_ptr<float>(), g0, g1,
            grad_values->data_ptr<float>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define DISPATCH_D(KK)                                                                                   \
    switch (D) {                                                                                       \
    case 4: launch<KK, 4>(means2d, conics, opacities, expert_ids, values, depths, backgrounds, tile_offsets,  \
                          flatten_ids, W, H, out, alphas, grad_out, g0, g1, grad_values); break;                \
    case 8: launch<KK, 8>(means2d, conics, opacities, expert_ids, values, depths, backgrounds, tile_offsets,  \
                          flatten_ids, W, H, out, alphas, grad_out, g0, g1, grad_values); break;                \
    case 16: launch<KK, 16>(means2d, conics, opacities, expert_ids, values, depths, backgrounds, tile_offsets, \
                            flatten_ids, W, H, out, alphas, grad_out, g0, g1, grad_values); break;              \
    case 32: launch<KK, 32>(means2d, conics, opacities, expert_ids, values, depths, backgrounds, tile_offsets, \
                            flatten_ids, W, H, out, alphas, grad_out, g0, g1, grad_values); break;              \
    default: TORCH_CHECK(false, "single_pass: channel count must be 4, 8, 16 or 32, got ", D);          \
    }

void dispatch(int K, int D, const torch::Tensor &means2d, const torch::Tensor &conics,
              const torch::Tensor &opacities, const torch::Tensor &expert_ids, const torch::Tensor &values,
              const torch::Tensor &depths, const torch::Tensor &backgrounds, const torch::Tensor &tile_offsets,
              const torch::Tensor &flatten_ids, int W, int H, torch::Tensor &out, torch::Tensor &alphas,
              const torch::Tensor *grad_out, int g0, int g1, torch::Tensor *grad_values) {
    switch (K) {
    case 2: DISPATCH_D(2) break;
    case 3: DISPATCH_D(3) break;
    case 4: DISPATCH_D(4) break;
    case 8: DISPATCH_D(8) break;
    default: TORCH_CHECK(false, "single_pass: expert slots must be 2, 3, 4 or 8, got ", K);
    }
}

void check(const torch::Tensor &t, const char *name, at::ScalarType type) {
    TORCH_CHECK(t.is_cuda() && t.is_contiguous() && t.scalar_type() == type, "single_pass: ", name,
                " must be a contiguous CUDA tensor of ", type);
}

}  // namespace

// means2d [C,N,2], conics [C,N,3], opacities [N], expert_ids [N] int32 (< K), values [C,N,D]
// (the last channel is taken from depths [C,N]), backgrounds [K,C,D], tile_offsets [C,th,tw]
// int32, flatten_ids [n_isects] int32 -> (out [K,C,H,W,D], alphas [K,C,H,W])
std::vector<torch::Tensor> forward(int64_t K, torch::Tensor means2d, torch::Tensor conics,
                                   torch::Tensor opacities, torch::Tensor expert_ids, torch::Tensor values,
                                   torch::Tensor depths, torch::Tensor backgrounds, torch::Tensor tile_offsets,
                                   torch::Tensor flatten_ids, int64_t W, int64_t H) {
    check(means2d, "means2d", at::kFloat); check(conics, "conics", at::kFloat);
    check(opacities, "opacities", at::kFloat); check(expert_ids, "expert_ids", at::kInt);
    check(values, "values", at::kFloat); check(backgrounds, "backgrounds", at::kFloat);
    check(depths, "depths", at::kFloat);
    check(tile_offsets, "tile_offsets", at::kInt); check(flatten_ids, "flatten_ids", at::kInt);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const int C = means2d.size(0), D = values.size(2);
    auto out = torch::empty({K, C, H, W, D}, values.options());
    auto alphas = torch::empty({K, C, H, W}, values.options());
    dispatch(K, D, means2d, conics, opacities, expert_ids, values, depths, backgrounds, tile_offsets, flatten_ids,
             W, H, out, alphas, nullptr, 0, 0, nullptr);
    return {out, alphas};
}

// the gradient of a loss w.r.t. values [C,N,D] from its gradient w.r.t. out [K,C,H,W,D], in
// channels [g0, g1) (zero elsewhere: the channels whose inputs need no gradient)
torch::Tensor backward(int64_t K, torch::Tensor means2d, torch::Tensor conics, torch::Tensor opacities,
                       torch::Tensor expert_ids, torch::Tensor values, torch::Tensor backgrounds,
                       torch::Tensor tile_offsets, torch::Tensor flatten_ids, int64_t W, int64_t H,
                       torch::Tensor grad_out, int64_t g0, int64_t g1) {
    check(grad_out, "grad_out", at::kFloat);
    const c10::cuda::CUDAGuard guard(means2d.device());
    const int D = values.size(2);
    auto grad_values = torch::zeros_like(values);
    torch::Tensor unused_out, unused_alphas;
    dispatch(K, D, means2d, conics, opacities, expert_ids, values, values, backgrounds, tile_offsets, flatten_ids,
             W, H, unused_out, unused_alphas, &grad_out, g0, g1, &grad_values);
    return grad_values;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "single-pass multi-expert blending: forward");
    m.def("backward", &backward, "single-pass multi-expert blending: gradient w.r.t. the values");
}
