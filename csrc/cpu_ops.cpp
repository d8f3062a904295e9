// CPU kernels of the poc_kernels ops: argument checks, work splitting (OpenMP
// through at::parallel_for) and dtype handling around the torch-free code of
// seeds.h, streams.h and distance.h.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include "artifacts.h"
#include "distance.h"
#include "ops.h"
#include "seeds.h"

namespace poc {
namespace {

constexpr int64_t kMaxU32 = 0xffffffffLL;

bool is_integer(const at::Tensor& t) { return at::isIntegralType(t.scalar_type(), /*includeBool=*/false); }

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got a tensor on ", t.device());
}

// Values of an integer tensor of any shape, checked to lie in [0, 2**32).
std::vector<uint32_t> u32_values(const at::Tensor& t, const char* name) {
  check_cpu(t, name);
  TORCH_CHECK(is_integer(t), name, " must be an integer tensor, got dtype ", t.scalar_type());
  const at::Tensor v = t.to(at::kLong).contiguous();
  const int64_t* p = v.data_ptr<int64_t>();
  std::vector<uint32_t> out(v.numel());
  for (int64_t i = 0; i < v.numel(); ++i) {
    TORCH_CHECK(p[i] >= 0 && p[i] <= kMaxU32, name, " must lie in [0, 2**32), got ", p[i]);
    out[i] = static_cast<uint32_t>(p[i]);
  }
  return out;
}

uint32_t* u32_ptr(at::Tensor& t) { return static_cast<uint32_t*>(t.data_ptr()); }

at::Tensor empty_u32(at::IntArrayRef size, const at::Tensor& like) {
  return at::empty(size, like.options().dtype(at::kUInt32));
}

void check_stream_args(const at::Tensor& seeds, int64_t n) {
  TORCH_CHECK(seeds.dim() == 1, "seeds must be a 1-D integer tensor, got shape ", seeds.sizes());
  TORCH_CHECK(n >= 0 && n <= kMaxU32 + 1, "n must lie in [0, 2**32], got ", n);
}

// Runs fn(row, begin, end, out_row) over rows of [S, n] in pieces of about 64K values.
template <class T, class F>
at::Tensor stream_op(const at::Tensor& seeds, int64_t n, at::ScalarType dtype, F fn) {
  check_stream_args(seeds, n);
  const std::vector<uint32_t> s = u32_values(seeds, "seeds");
  at::Tensor out = at::empty({seeds.size(0), n}, seeds.options().dtype(dtype));
  T* base = static_cast<T*>(out.data_ptr());
  constexpr int64_t kPiece = 1 << 16;
  const int64_t pieces = (n + kPiece - 1) / kPiece;
  at::parallel_for(0, int64_t(s.size()) * pieces, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      const int64_t row = it / pieces, i0 = it % pieces * kPiece, i1 = std::min(n, i0 + kPiece);
      fn(s[row], i0, i1, base + row * n + i0);
    }
  });
  return out;
}

}  // namespace

// ----------------------------------------------------------------------------- seeds

std::tuple<at::Tensor, at::Tensor, at::Tensor> derive_seeds_cpu(const std::string& block_hash,
                                                                const std::string& public_key, const at::Tensor& nonces,
                                                                int64_t num_reflections, bool need_input,
                                                                bool need_post) {
  TORCH_CHECK(nonces.dim() == 1, "nonces must be a 1-D integer tensor, got shape ", nonces.sizes());
  TORCH_CHECK(num_reflections >= 0, "num_reflections must be >= 0, got ", num_reflections);
  const std::vector<uint32_t> vals = u32_values(nonces, "nonces");
  const int64_t B = nonces.size(0);
  std::vector<int64_t> n64(vals.begin(), vals.end());
  at::Tensor input = empty_u32({need_input ? B : 0}, nonces);
  at::Tensor signs = empty_u32({need_post ? B : 0}, nonces);
  at::Tensor refl = empty_u32({need_post ? B : 0, num_reflections}, nonces);
  const sha256::Prefix prefix = nonce_prefix(block_hash, public_key);
  uint32_t* in_p = need_input ? u32_ptr(input) : nullptr;
  uint32_t* sg_p = need_post ? u32_ptr(signs) : nullptr;
  uint32_t* rf_p = need_post && num_reflections > 0 ? u32_ptr(refl) : nullptr;
  const SeedsFn fn = best_seeds_fn();
  at::parallel_for(0, B, 2048, [&](int64_t begin, int64_t end) {
    derive_seeds_range(prefix, n64.data(), begin, end, num_reflections, in_p, sg_p, rf_p, fn);
  });
  return {input, signs, refl};
}

// ----------------------------------------------------------------------------- streams

at::Tensor hash_stream_cpu(const at::Tensor& seeds, int64_t n) {
  return stream_op<uint32_t>(seeds, n, at::kUInt32,
                             [](uint32_t s, int64_t i0, int64_t i1, uint32_t* o) { hash_range(s, i0, i1, o); });
}

at::Tensor uniform_stream_cpu(const at::Tensor& seeds, int64_t n) {
  return stream_op<float>(seeds, n, at::kFloat,
                          [](uint32_t s, int64_t i0, int64_t i1, float* o) { uniform_range(s, i0, i1, o); });
}

at::Tensor sign_stream_cpu(const at::Tensor& seeds, int64_t n) {
  return stream_op<float>(seeds, n, at::kFloat,
                          [](uint32_t s, int64_t i0, int64_t i1, float* o) { sign_range(s, i0, i1, o); });
}

namespace {

template <class T>
void normal_rows(at::Tensor& out, const std::vector<uint32_t>& seeds, float scale) {
  const int64_t n = out.size(1), p = (n + 1) / 2, ld = out.stride(0);
  T* base = static_cast<T*>(out.data_ptr());
  constexpr int64_t kPairs = 8192;  // a multiple of 8
  const int64_t pieces = std::max<int64_t>(1, (p + kPairs - 1) / kPairs);
  at::parallel_for(0, int64_t(seeds.size()) * pieces, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> cbuf, sbuf;
    if (!std::is_same<T, float>::value) {
      cbuf.resize(kPairs);
      sbuf.resize(kPairs);
    }
    for (int64_t it = begin; it < end; ++it) {
      const int64_t row = it / pieces, j0 = it % pieces * kPairs, j1 = std::min(p, j0 + kPairs);
      const int64_t nsin = std::max<int64_t>(0, std::min(j1, n - p) - j0);
      T* r = base + row * ld;
      if constexpr (std::is_same<T, float>::value) {
        normal_pairs(seeds[row], n, j0, j1, scale, r + j0, r + p + j0, nsin);
      } else {
        normal_pairs(seeds[row], n, j0, j1, scale, cbuf.data(), sbuf.data(), nsin);
        for (int64_t j = 0; j < j1 - j0; ++j) r[j0 + j] = static_cast<T>(cbuf[j]);
        for (int64_t j = 0; j < nsin; ++j) r[p + j0 + j] = static_cast<T>(sbuf[j]);
      }
    }
  });
}

}  // namespace

void normal_cpu_(at::Tensor& out, const at::Tensor& seeds, double scale) {
  check_cpu(out, "out");
  check_stream_args(seeds, out.dim() == 2 ? out.size(1) : 0);
  TORCH_CHECK(out.dim() == 2 && out.size(0) == seeds.size(0), "out must be 2-D [len(seeds), n] = [", seeds.size(0),
              ", n], got shape ", out.sizes());
  TORCH_CHECK(out.size(1) <= 1 || out.stride(1) == 1, "out must have unit stride along its last dim, got strides ",
              out.strides());
  const std::vector<uint32_t> s = u32_values(seeds, "seeds");
  const float sc = static_cast<float>(scale);
  if (out.numel() == 0) return;
  switch (out.scalar_type()) {
    case at::kFloat: return normal_rows<float>(out, s, sc);
    case at::kDouble: return normal_rows<double>(out, s, sc);
    case at::kHalf: return normal_rows<c10::Half>(out, s, sc);
    case at::kBFloat16: return normal_rows<c10::BFloat16>(out, s, sc);
    default: TORCH_CHECK(false, "out must be float32, float64, float16 or bfloat16, got ", out.scalar_type());
  }
}

namespace {

// out[i - start] = N(seed, n)[i] for i in [start, start + len): cosine halves below p = ceil(n/2), sine
// halves above, in pieces of kPairs elements (each piece computes only the pairs it needs, one half each).
template <class T>
void normal_slice(T* out, uint32_t seed, int64_t n, int64_t start, int64_t len) {
  const int64_t p = (n + 1) / 2, stop = start + len;
  constexpr int64_t kPiece = 8192;
  const int64_t pieces = (len + kPiece - 1) / kPiece;
  at::parallel_for(0, pieces, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> cbuf(kPiece), sbuf(kPiece);
    for (int64_t it = begin; it < end; ++it) {
      const int64_t i0 = start + it * kPiece, i1 = std::min(stop, i0 + kPiece);
      if (i0 < p) {  // cosine halves: pairs [i0, min(i1, p))
        const int64_t j1 = std::min(i1, p);
        normal_pairs(seed, n, i0, j1, 1.0f, cbuf.data(), sbuf.data(), 0);
        for (int64_t k = 0; k < j1 - i0; ++k) out[i0 - start + k] = static_cast<T>(cbuf[k]);
      }
      if (i1 > p) {  // sine halves: pairs [max(i0, p) - p, i1 - p)
        const int64_t a = std::max(i0, p), j0 = a - p, j1 = i1 - p;
        normal_pairs(seed, n, j0, j1, 1.0f, cbuf.data(), sbuf.data(), j1 - j0);
        for (int64_t k = 0; k < j1 - j0; ++k) out[a - start + k] = static_cast<T>(sbuf[k]);
      }
    }
  });
}

}  // namespace

void normal_slice_cpu_(at::Tensor& out, int64_t seed, int64_t n, int64_t start) {
  check_cpu(out, "out");
  TORCH_CHECK(out.dim() == 1, "out must be 1-D, got shape ", out.sizes());
  TORCH_CHECK(out.numel() <= 1 || out.stride(0) == 1, "out must be contiguous, got stride ", out.stride(0));
  TORCH_CHECK(seed >= 0 && seed <= kMaxU32, "seed must lie in [0, 2**32), got ", seed);
  TORCH_CHECK(n >= 0 && n <= kMaxU32 + 1, "n must lie in [0, 2**32], got ", n);
  const int64_t len = out.numel();
  TORCH_CHECK(start >= 0 && start + len <= n, "start must lie in [0, n - len(out)] = [0, ", n - len, "], got ", start);
  if (len == 0) return;
  const uint32_t s = static_cast<uint32_t>(seed);
  switch (out.scalar_type()) {
    case at::kFloat: return normal_slice(out.data_ptr<float>(), s, n, start, len);
    case at::kDouble: return normal_slice(out.data_ptr<double>(), s, n, start, len);
    case at::kHalf: return normal_slice(out.data_ptr<c10::Half>(), s, n, start, len);
    case at::kBFloat16: return normal_slice(out.data_ptr<c10::BFloat16>(), s, n, start, len);
    default: TORCH_CHECK(false, "out must be float32, float64, float16 or bfloat16, got ", out.scalar_type());
  }
}

// ----------------------------------------------------------------------------- distances

at::Tensor compute_distances_cpu(const at::Tensor& last_hidden, const at::Tensor& weight, const at::Tensor& target,
                                 const c10::optional<at::Tensor>& sign_seeds, const at::Tensor& reflection_seeds) {
  check_cpu(last_hidden, "last_hidden");
  TORCH_CHECK(last_hidden.dim() == 2, "last_hidden must be 2-D [batch, hidden], got shape ", last_hidden.sizes());
  TORCH_CHECK(last_hidden.scalar_type() == at::kFloat, "last_hidden must be float32, got ", last_hidden.scalar_type());
  const int64_t B = last_hidden.size(0), H = last_hidden.size(1);
  TORCH_CHECK(H >= 1, "last_hidden must have hidden size >= 1, got shape ", last_hidden.sizes());
  check_cpu(weight, "weight");
  TORCH_CHECK(weight.scalar_type() == at::kFloat, "weight must be float32, got ", weight.scalar_type());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == H && weight.size(0) >= 1,
              "weight must be 2-D [output_dim, hidden] = [D, ", H, "], got shape ", weight.sizes());
  const int64_t D = weight.size(0);
  check_cpu(target, "target");
  TORCH_CHECK(target.scalar_type() == at::kDouble, "target must be float64, got ", target.scalar_type());
  TORCH_CHECK(target.dim() == 1 && target.size(0) == D, "target must be 1-D [output_dim] = [", D, "], got shape ",
              target.sizes());
  const bool use_signs = sign_seeds.has_value();
  std::vector<uint32_t> ss;
  if (use_signs) {
    TORCH_CHECK(sign_seeds->dim() == 1 && sign_seeds->size(0) == B, "sign_seeds must be 1-D [batch] = [", B,
                "], got shape ", sign_seeds->sizes());
    ss = u32_values(*sign_seeds, "sign_seeds");
  }
  TORCH_CHECK(reflection_seeds.dim() == 2 && reflection_seeds.size(0) == B,
              "reflection_seeds must be 2-D [batch, num_reflections] = [", B, ", R], got shape ",
              reflection_seeds.sizes());
  const int64_t R = reflection_seeds.size(1);
  const std::vector<uint32_t> rs = u32_values(reflection_seeds, "reflection_seeds");

  at::Tensor out = at::empty({B}, last_hidden.options());
  if (B == 0) return out;
  const at::Tensor x = last_hidden.contiguous();
  const at::Tensor w = weight.stride(1) == 1 ? weight : weight.contiguous();
  const at::Tensor t = target.contiguous();
  const float* xp = x.data_ptr<float>();
  const double* tp = t.data_ptr<double>();
  float* op = out.data_ptr<float>();

  const int64_t ldx = (H + 7) / 8 * 8;
  // Nonces go through in chunks to bound memory; a chunk is just a smaller batch.
  const int64_t chunk = std::max<int64_t>(kTileB, std::min<int64_t>(512, (int64_t(64) << 20) / (4 * (ldx + D))));
  std::vector<float> xhat(std::min(B, chunk) * ldx), logits(std::min(B, chunk) * D);
  std::vector<char> finite(std::min(B, chunk));
  const int64_t rows = block_rows(H), nblocks = (D + rows - 1) / rows;

  for (int64_t c0 = 0; c0 < B; c0 += chunk) {
    const int64_t cb = std::min(chunk, B - c0);
    at::parallel_for(0, cb, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> sx(H);
      std::vector<float> sv(H);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = c0 + i;
        finite[i] = prepare_row(xp + b * H, H, use_signs, use_signs ? ss[b] : 0u, rs.data() + b * R, R,
                                xhat.data() + i * ldx, ldx, RowScratch{sx.data(), sv.data()});
      }
    });
    const Projection P{xhat.data(), ldx, w.data_ptr<float>(), w.stride(0), cb, H, D, logits.data(), D};
    at::parallel_for(0, nblocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(kTileB * rows * 8);
      for (int64_t blk = begin; blk < end; ++blk)
        project_rows(P, blk * rows, std::min(D, (blk + 1) * rows), acc.data());
    });
    at::parallel_for(0, cb, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        op[c0 + i] = finite[i] ? distance_of(logits.data() + i * D, tp, D) : std::numeric_limits<float>::quiet_NaN();
    });
  }
  return out;
}

// ----------------------------------------------------------------------------- artifacts

at::Tensor compute_artifacts_cpu(const at::Tensor& last_hidden, const at::Tensor& pick_seeds,
                                 const at::Tensor& haar_seeds) {
  check_cpu(last_hidden, "last_hidden");
  TORCH_CHECK(last_hidden.dim() == 2, "last_hidden must be 2-D [batch, hidden], got shape ", last_hidden.sizes());
  TORCH_CHECK(last_hidden.scalar_type() == at::kFloat, "last_hidden must be float32, got ", last_hidden.scalar_type());
  const int64_t B = last_hidden.size(0), H = last_hidden.size(1);
  TORCH_CHECK(pick_seeds.dim() == 1 && pick_seeds.size(0) == B, "pick_seeds must be [B] = [", B, "], got shape ",
              pick_seeds.sizes());
  TORCH_CHECK(haar_seeds.dim() == 2 && haar_seeds.size(0) == B, "haar_seeds must be [B, k - 1] with B = ", B,
              ", got shape ", haar_seeds.sizes());
  const int64_t k = haar_seeds.size(1) + 1;
  TORCH_CHECK(k <= H, "k = 1 + haar_seeds.size(1) must lie in [1, hidden size = ", H, "], got ", k);
  const std::vector<uint32_t> picks = u32_values(pick_seeds, "pick_seeds");
  const std::vector<uint32_t> haar = u32_values(haar_seeds, "haar_seeds");
  at::Tensor out = at::empty({B, k}, last_hidden.options());
  if (B == 0) return out;
  const at::Tensor h = last_hidden.contiguous();
  const float* hp = h.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> scores(H), tmp(H);
    std::vector<int64_t> idx(k);
    std::vector<double> x(k), ud(k);
    std::vector<float> u(k + 8);  // normal_stream writes in blocks of 8 pairs
    const ArtifactScratch s{scores.data(), tmp.data(), idx.data(), x.data(), u.data(), ud.data()};
    for (int64_t b = begin; b < end; ++b) {
      float* row = op + b * k;
      if (!artifact_row(hp + b * H, H, k, picks[b], haar.data() + b * (k - 1), row, s))
        std::fill(row, row + k, std::numeric_limits<float>::quiet_NaN());
    }
  });
  return out;
}

// SPEC §10: x + x @ p, the sum over i of the exact float64 products x_i * p[i][j] folded in the fixed pairwise
// order of poc_kernels.vectors.tree_sum (zero padded to m = 2^ceil(log2 H); v[i] += v[i + m/2], then m/2, ...),
// then x_j added in float64 and the result rounded once: the same bits as vectors.project, in every batch.
//
// That order is a balanced binary tree over the leaves taken in bit-reversed index order k -> i = bitrev(k): the
// last fold adds the even and the odd indices, and so on down to the first, which adds i and i + m/2. So it is
// computed as a stream over k: subtrees of kGroup consecutive leaves are summed in registers, straight-line, and
// their values are merged through a binary counter (one partial sum per level), kCols output columns at a time.
// Addition is commutative bit for bit, so only the tree's shape matters.
namespace {

constexpr int kCols = 16;   // output columns summed together (one cache line of p per leaf)
constexpr int kGroup = 16;  // leaves summed in registers before the counter

// The subtree of N consecutive leaves order[k .. k + N) (padding leaves, i >= H, are +0.0).
template <int N>
inline void leaf_tree(const int32_t* order, const double* x, const float* pj, int64_t H, int64_t k, double* out) {
  if constexpr (N == 1) {
    const int64_t i = order[k];
    if (i < H) {
      const double xi = x[i];
      const float* p = pj + i * H;
      for (int w = 0; w < kCols; ++w) out[w] = xi * static_cast<double>(p[w]);
    } else {
      for (int w = 0; w < kCols; ++w) out[w] = 0.0;
    }
  } else {
    double a[kCols], b[kCols];
    leaf_tree<N / 2>(order, x, pj, H, k, a);
    leaf_tree<N / 2>(order, x, pj, H, k + N / 2, b);
    for (int w = 0; w < kCols; ++w) out[w] = a[w] + b[w];
  }
}

// The same sum for one column (the last H % kCols columns, and H < kGroup): leaf by leaf through the counter.
double column_tree(const int32_t* order, const double* x, const float* pj, int64_t H, int64_t m, double* stack) {
  for (int64_t k = 0; k < m; ++k) {
    const int64_t i = order[k];
    double acc = i < H ? x[i] * static_cast<double>(pj[i * H]) : 0.0;
    int level = 0;
    for (; (k >> level) & 1; ++level) acc = stack[level] + acc;
    stack[level] = acc;
  }
  int top = 0;
  while ((int64_t{1} << top) < m) ++top;
  return stack[top];
}

}  // namespace

at::Tensor project_cpu(const at::Tensor& x, const at::Tensor& p) {
  check_cpu(x, "x");
  check_cpu(p, "p");
  TORCH_CHECK(x.scalar_type() == at::kFloat && p.scalar_type() == at::kFloat, "x and p must be float32, got ",
              x.scalar_type(), " and ", p.scalar_type());
  TORCH_CHECK(p.dim() == 2 && p.size(0) == p.size(1), "p must be [H, H], got shape ", p.sizes());
  const int64_t H = p.size(0);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == H, "x must be [..., H] with H = ", H, ", got shape ", x.sizes());
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t rows = H ? x.numel() / H : 0;
  if (rows == 0) return out;
  const at::Tensor xc = x.contiguous(), pc = p.contiguous();
  const float* xp = xc.data_ptr<float>();
  const float* pp = pc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  int bits = 0;
  while ((int64_t{1} << bits) < H) ++bits;
  const int64_t m = int64_t{1} << bits;
  std::vector<int32_t> order(m);  // leaf k of the tree is index bitrev(k)
  for (int64_t k = 0; k < m; ++k) {
    int64_t i = 0;
    for (int b = 0; b < bits; ++b) i |= ((k >> b) & 1) << (bits - 1 - b);
    order[k] = static_cast<int32_t>(i);
  }
  const int32_t* ord = order.data();
  const int64_t wide = m >= kGroup ? H / kCols * kCols : 0;  // columns done kCols at a time
  // Rows in tiles of kRows, each column block of p (H x kCols floats) reused across the tile from the cache.
  constexpr int64_t kRows = 16;
  at::parallel_for(0, rows, kRows, [&](int64_t begin, int64_t end) {
    std::vector<double> xd(static_cast<size_t>(kRows * H)), stack(static_cast<size_t>((bits + 1) * kCols));
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t nr = std::min(kRows, end - r0);
      for (int64_t k = 0; k < nr * H; ++k) xd[k] = static_cast<double>(xp[r0 * H + k]);
      for (int64_t j0 = 0; j0 < wide; j0 += kCols) {
        const float* pj = pp + j0;
        for (int64_t rr = 0; rr < nr; ++rr) {
          const double* x = xd.data() + rr * H;
          double acc[kCols];
          for (int64_t g = 0; g < m / kGroup; ++g) {
            leaf_tree<kGroup>(ord, x, pj, H, g * kGroup, acc);
            int level = 0;
            for (; (g >> level) & 1; ++level) {
              const double* st = stack.data() + level * kCols;
              for (int w = 0; w < kCols; ++w) acc[w] = st[w] + acc[w];
            }
            std::copy(acc, acc + kCols, stack.data() + level * kCols);
          }
          int top = 0;
          while ((int64_t{kGroup} << top) < m) ++top;
          const double* sum = stack.data() + top * kCols;
          float* orow = op + (r0 + rr) * H;
          for (int w = 0; w < kCols; ++w) orow[j0 + w] = static_cast<float>(x[j0 + w] + sum[w]);
        }
      }
      for (int64_t rr = 0; rr < nr; ++rr) {
        const double* x = xd.data() + rr * H;
        float* orow = op + (r0 + rr) * H;
        for (int64_t j = wide; j < H; ++j)
          orow[j] = static_cast<float>(x[j] + column_tree(ord, x, pp + j, H, m, stack.data()));
      }
    }
  });
  return out;
}

bool set_simd_enabled(bool enabled) {
  const bool previous = simd_enabled();
  simd_enabled() = enabled && POC_HAVE_AVX2;
  return previous;
}

}  // namespace poc
