// Experiment, not part of kerasxai (layers use keras.ops only): the rollout's head fusion and
// discard step for one block as a native XLA FFI handler on the CPU. Per image: fuse the heads
// (mean | max | min), then zero the k smallest of the T*T entries (ties: the lowest flat
// indices first, as a stable sort), never [CLS, CLS]; the k-th smallest comes from an exact
// radix select on order-preserving uint32 keys (11 + 11 + 10 bits). Images run in parallel
// (OpenMP). Built and timed by ab_in_model.py beside this file.
#include <cstdint>
#include <cstring>
#include <vector>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

static inline uint32_t ukey(float v) {
  int32_t b; std::memcpy(&b, &v, 4);
  b ^= (b >> 31) & 0x7FFFFFFF;
  return static_cast<uint32_t>(b) ^ 0x80000000u;
}

// One image: p (H, T*T) probabilities -> o (T*T) fused, discarded. keys: 2n scratch; hist: 4 x 2048.
static void one_image(const float* p, float* o, int64_t H, int64_t n, int32_t mode, int64_t k,
                      uint32_t* keys, uint32_t* hist) {
  std::memcpy(o, p, n * sizeof(float));
  for (int64_t h = 1; h < H; ++h) {
    const float* q = p + h * n;
    if (mode == 0) for (int64_t i = 0; i < n; ++i) o[i] = o[i] + q[i];
    else if (mode == 1) for (int64_t i = 0; i < n; ++i) o[i] = q[i] > o[i] ? q[i] : o[i];
    else for (int64_t i = 0; i < n; ++i) o[i] = q[i] < o[i] ? q[i] : o[i];
  }
  if (mode == 0) { const float hf = static_cast<float>(H); for (int64_t i = 0; i < n; ++i) o[i] = o[i] / hf; }
  for (int64_t i = 0; i < n; ++i) keys[i] = ukey(o[i]);
  if (k <= 0) return;
  // radix select: 11 + 11 + 10 bits; candidates compacted after each digit
  uint32_t* cand = keys + n;  // scratch of n entries after the keys
  int64_t kk = k, below = 0;
  // digit 0 over all keys, 4 interleaved histograms (repeated digits would stall on one counter)
  std::memset(hist, 0, 4 * 2048 * 4);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    hist[keys[i] >> 21]++; hist[2048 + (keys[i + 1] >> 21)]++;
    hist[4096 + (keys[i + 2] >> 21)]++; hist[6144 + (keys[i + 3] >> 21)]++;
  }
  for (; i < n; ++i) hist[keys[i] >> 21]++;
  uint32_t prefix = 0; int64_t c = 0; uint32_t d = 0;
  for (d = 0; d < 2048; ++d) {
    const int64_t h = hist[d] + hist[2048 + d] + hist[4096 + d] + hist[6144 + d];
    if (c + h >= kk) break;
    c += h;
  }
  below += c; kk -= c; prefix = d << 21;
  int64_t m = 0;
  for (i = 0; i < n; ++i) { const uint32_t x = keys[i]; cand[m] = x; m += (x >> 21) == d; }
  const int shifts[2] = {10, 0}; const int widths[2] = {11, 10};
  for (int r = 0; r < 2; ++r) {
    const int sh = shifts[r]; const uint32_t mask = (1u << widths[r]) - 1;
    std::memset(hist, 0, 2048 * 4);
    for (i = 0; i < m; ++i) hist[(cand[i] >> sh) & mask]++;
    c = 0;
    for (d = 0; d <= mask; ++d) { if (c + hist[d] >= kk) break; c += hist[d]; }
    below += c; kk -= c; prefix |= d << sh;
    int64_t m2 = 0;
    for (i = 0; i < m; ++i) { const uint32_t x = cand[i]; cand[m2] = x; m2 += ((x >> sh) & mask) == d; }
    m = m2;
  }
  const uint32_t kth = prefix;
  const int64_t need = k - below;  // >= 1 entries equal to kth are dropped, the first ones
  const float keep0 = o[0];
  for (i = 0; i < n; ++i) o[i] = keys[i] < kth ? 0.0f : o[i];
  int64_t seen = 0;
  for (i = 0; i < n && seen < need; ++i) {
    if (keys[i] == kth) { o[i] = 0.0f; ++seen; }
  }
  o[0] = keep0;
}

static ffi::Error FuseDiscardImpl(ffi::Buffer<ffi::F32> probs, ffi::ResultBuffer<ffi::F32> out,
                                  int32_t mode, int64_t k, int32_t threads) {
  auto dims = probs.dimensions();
  const int64_t B = dims[0], H = dims[1], T = dims[2], n = T * T;
  const float* p = probs.typed_data();
  float* o = out->typed_data();
  #pragma omp parallel num_threads(threads)
  {
    std::vector<uint32_t> keys(2 * n), hist(4 * 2048);
    #pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < B; ++b) one_image(p + b * H * n, o + b * n, H, n, mode, k, keys.data(), hist.data());
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FuseDiscard, FuseDiscardImpl,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>()
        .Attr<int32_t>("mode").Attr<int64_t>("k").Attr<int32_t>("threads"));
