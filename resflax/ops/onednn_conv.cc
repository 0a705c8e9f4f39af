// oneDNN 2-D convolutions for XLA:CPU, called through the XLA FFI (resflax/ops/onednn.py).
//
// Three handlers, float32, NHWC activations and HWIO kernels (flax's nn.Conv layout), any strides,
// non-negative explicit padding, feature groups, no dilation:
//   ResflaxOnednnConvFwd:        y  [N, Ho, Wo, O]      = conv(x [N, H, W, C], w [KH, KW, C/G, O])
//   ResflaxOnednnConvBwdData:    dx [N, H, W, C]        from dy [N, Ho, Wo, O] and w
//   ResflaxOnednnConvBwdWeights: dw [KH, KW, C/G, O]    from x and dy
// Attributes: strides [sh, sw], padding [top, bottom, left, right], groups G.
// A primitive (and its scratch buffers for the kernel reorders) is created once per shape and
// kept; calls are serialised by one mutex (each call uses every OpenMP thread already).
// Built by resflax.ops.onednn with `g++ -O2 -shared -fPIC -std=c++17` against oneDNN 3.x.

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

enum Kind { kFwd = 0, kBwdData = 1, kBwdWeights = 2 };

struct Shape {
  int64_t n, h, w, c, kh, kw, o, ho, wo, g;
  int64_t sh, sw, pt, pb, pl, pr;
  int kind;
  std::vector<int64_t> key() const {
    return {n, h, w, c, kh, kw, o, ho, wo, g, sh, sw, pt, pb, pl, pr, kind};
  }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Logical (oneDNN) descriptors of the user's buffers: NCHW dims in NHWC order, OIHW / GOIHW dims
// in HWIO order.
memory::desc SrcDesc(const Shape& s, tag t = tag::nhwc) {
  return memory::desc({s.n, s.c, s.h, s.w}, dt::f32, t);
}
memory::desc DstDesc(const Shape& s, tag t = tag::nhwc) {
  return memory::desc({s.n, s.o, s.ho, s.wo}, dt::f32, t);
}
memory::desc WeightsDesc(const Shape& s, bool any) {
  if (s.g == 1) {
    return memory::desc({s.o, s.c, s.kh, s.kw}, dt::f32, any ? tag::any : tag::hwio);
  }
  memory::dims dims = {s.g, s.o / s.g, s.c / s.g, s.kh, s.kw};
  if (any) return memory::desc(dims, dt::f32, tag::any);
  // HWIO with O = G * (O/G): element (g, o, i, h, w) sits at
  // ((h * KW + w) * (C/G) + i) * O + g * (O/G) + o.
  memory::dims strides = {s.o / s.g, 1, s.o, s.kw * (s.c / s.g) * s.o, (s.c / s.g) * s.o};
  return memory::desc(dims, dt::f32, strides);
}

struct Entry {
  dnnl::primitive prim;
  memory::desc user_weights, prim_weights;  // reorder between them when they differ
  bool reorder = false;
  std::unique_ptr<memory> weights;          // the primitive's kernel layout, when reordered
  std::unique_ptr<dnnl::reorder> to_prim, to_user;
};

std::mutex mu;
std::map<std::vector<int64_t>, std::unique_ptr<Entry>>* cache =
    new std::map<std::vector<int64_t>, std::unique_ptr<Entry>>();

Entry* Get(const Shape& s) {
  auto key = s.key();
  auto it = cache->find(key);
  if (it != cache->end()) return it->second.get();
  auto& eng = Engine();
  memory::dims strides = {s.sh, s.sw}, pad_l = {s.pt, s.pl}, pad_r = {s.pb, s.pr};
  auto src = SrcDesc(s), dst = DstDesc(s);
  auto wany = WeightsDesc(s, true), wuser = WeightsDesc(s, false);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wany,
      dst, strides, pad_l, pad_r);
  auto e = std::make_unique<Entry>();
  e->user_weights = wuser;
  if (s.kind == kFwd) {
    e->prim = dnnl::convolution_forward(fwd);
    e->prim_weights = fwd.weights_desc();
  } else if (s.kind == kBwdData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src, wany, dst, strides, pad_l, pad_r, fwd);
    e->prim = dnnl::convolution_backward_data(pd);
    e->prim_weights = pd.weights_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src, wany, dst, strides, pad_l, pad_r, fwd);
    e->prim = dnnl::convolution_backward_weights(pd);
    e->prim_weights = pd.diff_weights_desc();
  }
  e->reorder = e->prim_weights != e->user_weights;
  if (e->reorder) {
    e->weights = std::make_unique<memory>(e->prim_weights, eng);
    if (s.kind == kBwdWeights) {
      e->to_user = std::make_unique<dnnl::reorder>(
          dnnl::reorder::primitive_desc(eng, e->prim_weights, eng, e->user_weights));
    } else {
      e->to_prim = std::make_unique<dnnl::reorder>(
          dnnl::reorder::primitive_desc(eng, e->user_weights, eng, e->prim_weights));
    }
  }
  Entry* out = e.get();
  (*cache)[key] = std::move(e);
  return out;
}

ffi::Error Check(const Shape& s) {
  if (s.sh < 1 || s.sw < 1 || s.pt < 0 || s.pb < 0 || s.pl < 0 || s.pr < 0 || s.g < 1 ||
      s.c % s.g || s.o % s.g) {
    return ffi::Error::InvalidArgument("resflax onednn conv: bad strides, padding or groups");
  }
  if ((s.h + s.pt + s.pb - s.kh) / s.sh + 1 != s.ho ||
      (s.w + s.pl + s.pr - s.kw) / s.sw + 1 != s.wo) {
    return ffi::Error::InvalidArgument("resflax onednn conv: output shape does not match");
  }
  return ffi::Error::Success();
}

Shape MakeShape(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                ffi::Span<const int64_t> y, ffi::Span<const int64_t> strides,
                ffi::Span<const int64_t> padding, int64_t groups, int kind) {
  Shape s;
  s.n = x[0], s.h = x[1], s.w = x[2], s.c = x[3];
  s.kh = w[0], s.kw = w[1], s.o = w[3];
  s.ho = y[1], s.wo = y[2];
  s.g = groups;
  s.sh = strides[0], s.sw = strides[1];
  s.pt = padding[0], s.pb = padding[1], s.pl = padding[2], s.pr = padding[3];
  s.kind = kind;
  return s;
}

ffi::Error Run(const Shape& s, float* src, float* weights, float* dst) {
  if (auto err = Check(s); err.failure()) return err;
  try {
    std::lock_guard<std::mutex> lock(mu);
    Entry* e = Get(s);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    memory src_m(SrcDesc(s), eng, src), dst_m(DstDesc(s), eng, dst);
    memory user_w(e->user_weights, eng, weights);
    memory& prim_w = e->reorder ? *e->weights : user_w;
    if (s.kind == kFwd) {
      if (e->reorder) e->to_prim->execute(stream, user_w, prim_w);
      e->prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w},
                               {DNNL_ARG_DST, dst_m}});
    } else if (s.kind == kBwdData) {
      if (e->reorder) e->to_prim->execute(stream, user_w, prim_w);
      e->prim.execute(stream, {{DNNL_ARG_DIFF_SRC, src_m}, {DNNL_ARG_WEIGHTS, prim_w},
                               {DNNL_ARG_DIFF_DST, dst_m}});
    } else {
      e->prim.execute(stream, {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                               {DNNL_ARG_DIFF_DST, dst_m}});
      if (e->reorder) e->to_user->execute(stream, prim_w, user_w);
    }
    stream.wait();
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("resflax onednn conv: ") + err.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using Ints = ffi::Span<const int64_t>;

ffi::Error Fwd(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, Ints strides, Ints padding,
               int64_t groups) {
  auto s = MakeShape(x.dimensions(), w.dimensions(), y->dimensions(), strides, padding, groups,
                     kFwd);
  return Run(s, x.typed_data(), w.typed_data(), y->typed_data());
}

ffi::Error BwdData(F32 dy, F32 w, ffi::ResultBuffer<ffi::F32> dx, Ints strides, Ints padding,
                   int64_t groups) {
  auto s = MakeShape(dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding, groups,
                     kBwdData);
  return Run(s, dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error BwdWeights(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dw, Ints strides, Ints padding,
                      int64_t groups) {
  auto s = MakeShape(x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding, groups,
                     kBwdWeights);
  return Run(s, x.typed_data(), dw->typed_data(), dy.typed_data());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResflaxOnednnConvFwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<Ints>("strides")
                                  .Attr<Ints>("padding")
                                  .Attr<int64_t>("groups"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResflaxOnednnConvBwdData, BwdData,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<Ints>("strides")
                                  .Attr<Ints>("padding")
                                  .Attr<int64_t>("groups"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResflaxOnednnConvBwdWeights, BwdWeights,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()
                                  .Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<Ints>("strides")
                                  .Attr<Ints>("padding")
                                  .Attr<int64_t>("groups"));
