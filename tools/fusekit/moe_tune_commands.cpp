// `fusekit tune moe`: the offline tuner of the Hopper MoE path. For each model shape and token
// count it routes random tokens (k distinct experts each, uniform), counts, scans and permutes
// them as the forward does, then times GEMM1 (N = 2I, K = H) and GEMM2 (N = H, K = I) with every
// compiled tile. GEMM1 runs with the epilogue the layer runs on prepared weights
// (moe_prepared_config: SwiGLU in the epilogue where W1 is interleaved, else a plain store).
// Then the candidate pairs (sm90::tuner_candidate_pairs, gemm_config_sm90.h) are timed as the
// layer runs them, GEMM1 then GEMM2 (on GEMM1's output where SwiGLU is in its epilogue; the
// SwiGLU pass between them is not timed), and sm90::tuner_pick_pair keeps one. It prints the
// table and, with --write, writes it
// as the C++ rows of one card that gemm_config_sm90.cpp includes
// (src/cuda/moe/sm90/tuned_configs_sm90_<card>.inc, rows keyed by the device name and SM count);
// each row serves the T range around its tuned T (geometric midpoints to its neighbours). Rows it
// did not re-tune (shapes left out by --cases, other cards that share the file) and the file's
// header notes stay as the file had them (tuned_table.h).
//
//   fusekit tune moe [--cases qwen3-30b-a3b,qwen3-235b-a22b,mixtral-8x7b] [--tokens 64,256,...]
//                    [--layout nk|kn] [--write PATH] [--json PATH] [--iters N]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "cli.h"
#include "moe_shape_config.h"
#include "tuned_table.h"

#if FUSEKIT_WITH_CUDA
#include <cuda_runtime.h>

#include "common/float_bits.h"
#include "fusekit/moe.h"
#include "cuda/moe/gemm_config.h"
#include "cuda/moe/sm90/gemm_config_sm90.h"
#include "cuda/moe/sm90/moe_sm90.h"
#endif

namespace {

#if FUSEKIT_WITH_CUDA
struct ModelCase {
  const char* name;
  std::int64_t E, k, H, I;
};
constexpr ModelCase kCases[] = {
    {"qwen3-30b-a3b", 128, 8, 2048, 768},
    {"qwen3-235b-a22b", 128, 8, 4096, 1536},
    {"mixtral-8x7b", 8, 2, 4096, 14336},
};

using fusekit::cuda_moe::sm90::GemmTile;
constexpr const GemmTile* kTiles = fusekit::cuda_moe::sm90::kGemmTiles.data();
constexpr int kNumTiles = fusekit::cuda_moe::sm90::kNumGemmTiles;

// Device memory for the tuner only; never zeros (zeros run faster than real data).
struct Buf {
  void* p = nullptr;
  std::size_t bytes = 0;
  explicit Buf(std::size_t b) : bytes(b) {
    if (cudaMalloc(&p, std::max<std::size_t>(b, 256)) != cudaSuccess) p = nullptr;
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// Fills a bf16 buffer with uniform values in [-scale, scale): one random 16 MiB block, copied
// across the buffer.
bool fill_random_bf16(void* dst, std::size_t elems, float scale, std::mt19937_64& rng) {
  const std::size_t block = std::min<std::size_t>(elems, std::size_t(8) << 20);
  std::vector<std::uint16_t> host(block);
  std::uniform_real_distribution<float> dist(-scale, scale);
  for (auto& h : host) h = fusekit::float_to_bf16_bits(dist(rng));
  for (std::size_t at = 0; at < elems; at += block) {
    const std::size_t n = std::min(block, elems - at);
    if (cudaMemcpy(static_cast<std::uint16_t*>(dst) + at, host.data(), n * 2, cudaMemcpyHostToDevice) != cudaSuccess) {
      return false;
    }
  }
  return true;
}

struct TunedRow {
  const ModelCase* mc;
  std::int64_t tokens;
  GemmTile best1, best2;
  double us1[kNumTiles], us2[kNumTiles];
  double pair_us;  // the kept pair, GEMM1 then GEMM2
};

int tune_moe(const fusekit::cli::Args& args) {
  namespace sm90 = fusekit::cuda_moe::sm90;
  int device = 0;
  cudaGetDevice(&device);
  if (!sm90::sm90_grouped_gemm_available(device)) {
    std::printf("tune moe: needs an sm_90 GPU and a build with CUTLASS (device %s)\n",
                fusekit::bench::device_name().c_str());
    return 1;
  }
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  // The table's rows hold for this card only (gemm_config_sm90.h): cudaDeviceProp::name, as the
  // forward reads it.
  const std::string prop_name = fusekit::bench::device_name();
  const std::string wanted = args.get("cases", "");
  // From T = 4: a shape's first row serves every T down to where the decode kernels stop, so it
  // is timed as near that as the list gets: with T = 16's tile at T = 4, Mixtral's layer ran
  // 0.85x the Triton kernel (bench/results/moe_decode_peers_h200.json). Below, a T is skipped
  // only where every layout decodes (gemm_config.h grouped_path_serves), so the first T timed is
  // the list's smallest that some layout runs grouped: Mixtral T = 4 (KN; NK decodes it).
  const std::vector<std::int64_t> token_list =
      args.get_int_list("tokens", {4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384});
  const auto layout = args.get("layout", "nk") == "kn" ? fusekit::MoeWeightLayout::kKN : fusekit::MoeWeightLayout::kNK;
  fusekit::bench::TimingOptions timing;
  timing.warmup = 3;
  timing.iters = static_cast<int>(args.get_int("iters", 20));
  std::mt19937_64 rng(20261123);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);

  fusekit::bench::BenchRun run;
  run.device = fusekit::bench::device_name();
  run.commit = fusekit::bench::git_commit();
  run.date = fusekit::bench::today();
  run.command = args.command_line;
  std::vector<TunedRow> rows;

  for (const ModelCase& mc : kCases) {
    if (!wanted.empty() && wanted.find(mc.name) == std::string::npos) continue;
    const std::int64_t max_T = *std::max_element(token_list.begin(), token_list.end());
    const std::int64_t max_pairs = max_T * mc.k;
    // GEMM1's epilogue in the layer on prepared weights: SwiGLU where W1 gets interleaved. With
    // --layout kn the weights are timed as given (not prepared): a plain store.
    fusekit::MoeConfig layer_config = fusekit::bench::moe_config_of_shape(mc.E, mc.k, mc.H, mc.I, max_T);
    layer_config.layout = layout;
    layer_config.backend = fusekit::MoeBackend::kCuda;
    const bool swiglu_in_gemm1 =
        layout == fusekit::MoeWeightLayout::kNK &&
        fusekit::moe_prepared_config(layer_config).gate_up_order == fusekit::MoeGateUpOrder::kInterleaved8;
    std::ostringstream params;
    params << "{\"e\": " << mc.E << ", \"k\": " << mc.k << ", \"h\": " << mc.H << ", \"i\": " << mc.I
           << ", \"layout\": \"" << (layout == fusekit::MoeWeightLayout::kNK ? "nk" : "kn")
           << "\", \"gemm1_epilogue\": \"" << (swiglu_in_gemm1 ? "swiglu" : "store") << "\"}";
    const std::string params_json = params.str();
    Buf w1(std::size_t(mc.E) * 2 * mc.I * mc.H * 2), w2(std::size_t(mc.E) * mc.H * mc.I * 2);
    Buf x(std::size_t(max_T) * mc.H * 2), ids(max_pairs * 4), counts(mc.E * 4), rank(max_pairs * 4),
        offsets((mc.E + 1) * 4), inv(max_pairs * 4);
    // h (GEMM1's output before SwiGLU) only where GEMM1 stores it.
    Buf xs(std::size_t(max_pairs) * mc.H * 2), h(swiglu_in_gemm1 ? 0 : std::size_t(max_pairs) * 2 * mc.I * 2),
        act(std::size_t(max_pairs) * mc.I * 2), y(std::size_t(max_pairs) * mc.H * 2);
    Buf ws1(sm90::grouped_gemm_bf16_sm90_workspace_size(int(mc.E)));
    if (!w1.p || !w2.p || !x.p || !xs.p || !h.p || !act.p || !y.p || !ws1.p) {
      std::printf("tune moe: out of device memory for %s\n", mc.name);
      return 1;
    }
    fill_random_bf16(w1.p, w1.bytes / 2, 1.f / std::sqrt(float(mc.H)), rng);
    fill_random_bf16(w2.p, w2.bytes / 2, 1.f / std::sqrt(float(mc.I)), rng);
    fill_random_bf16(x.p, x.bytes / 2, 1.f, rng);
    fill_random_bf16(act.p, act.bytes / 2, 1.f, rng);

    for (std::int64_t T : token_list) {
      if (!fusekit::cuda_moe::grouped_path_serves(T, mc.k, mc.E)) continue;
      const std::int64_t pairs = T * mc.k;
      std::vector<std::int32_t> host_ids;
      std::vector<std::int32_t> perm(mc.E);
      for (std::int64_t t = 0; t < T; ++t) {
        std::iota(perm.begin(), perm.end(), 0);
        for (std::int64_t j = 0; j < mc.k; ++j) {
          std::uniform_int_distribution<std::int64_t> pick(j, mc.E - 1);
          std::swap(perm[j], perm[pick(rng)]);
          host_ids.push_back(perm[j]);
        }
      }
      cudaMemcpy(ids.p, host_ids.data(), pairs * 4, cudaMemcpyHostToDevice);
      sm90::CountPairsParams cp;
      cp.topk_ids = static_cast<const std::int32_t*>(ids.p);
      cp.pairs = pairs;
      cp.num_experts = int(mc.E);
      cp.counts = static_cast<std::int32_t*>(counts.p);
      cp.rank = static_cast<std::int32_t*>(rank.p);
      sm90::PermuteParams pp;
      pp.x = static_cast<const __nv_bfloat16*>(x.p);
      pp.x_row_stride = mc.H;
      pp.topk_ids = cp.topk_ids;
      pp.rank = cp.rank;
      pp.offsets = static_cast<const std::int32_t*>(offsets.p);
      pp.pairs = pairs;
      pp.top_k = int(mc.k);
      pp.num_experts = int(mc.E);
      pp.hidden = mc.H;
      pp.xs = static_cast<__nv_bfloat16*>(xs.p);
      pp.inv = static_cast<std::int32_t*>(inv.p);
      fusekit::Status st = sm90::launch_align_count_scan(cp, static_cast<std::int32_t*>(offsets.p), stream);
      if (st.ok()) st = sm90::launch_permute_rows_bf16(pp, stream);
      cudaStreamSynchronize(stream);
      if (!st.ok()) {
        std::printf("tune moe: %s\n", st.to_string().c_str());
        return 1;
      }

      // The GEMMs as the layer runs them on prepared weights.
      auto gemm1_args = [&](GemmTile tile) {
        sm90::GroupedGemmArgs g;
        g.group_offsets = pp.offsets;
        g.group_rows = cp.counts;
        g.groups = int(mc.E);
        g.layout = layout;
        g.tile = tile;
        g.workspace = ws1.p;
        g.workspace_bytes = ws1.bytes;
        g.a = pp.xs;
        g.b = static_cast<const __nv_bfloat16*>(w1.p);
        g.epilogue = swiglu_in_gemm1 ? sm90::GemmEpilogue::kSwiglu : sm90::GemmEpilogue::kStore;
        g.d = static_cast<__nv_bfloat16*>(swiglu_in_gemm1 ? act.p : h.p);
        g.n = 2 * mc.I;
        g.k = mc.H;
        return g;
      };
      auto gemm2_args = [&](GemmTile tile) {
        sm90::GroupedGemmArgs g = gemm1_args(tile);
        g.epilogue = sm90::GemmEpilogue::kStore;
        g.a = static_cast<const __nv_bfloat16*>(act.p);
        g.b = static_cast<const __nv_bfloat16*>(w2.p);
        g.d = static_cast<__nv_bfloat16*>(y.p);
        g.n = mc.H;
        g.k = mc.I;
        return g;
      };
      TunedRow row{&mc, T, GemmTile::kPingpong64x128, GemmTile::kPingpong64x128, {}, {}, 0.0};
      for (int ti = 0; ti < kNumTiles; ++ti) {
        row.us1[ti] = row.us2[ti] = std::numeric_limits<double>::infinity();
        if (!sm90::gemm_tile_supports(kTiles[ti], layout)) continue;
        if (kTiles[ti] == GemmTile::kStreamSwapAb && double(pairs) / double(mc.E) > sm90::kStreamSwapAbMaxRowsPerExpert) {
          continue;
        }
        sm90::GroupedGemmArgs g1 = gemm1_args(kTiles[ti]), g2 = gemm2_args(kTiles[ti]);
        fusekit::Status s1, s2;
        const double us1 = fusekit::bench::median_us(
            [&](int, cudaStream_t s) { s1 = sm90::grouped_gemm_bf16_sm90(g1, s); }, timing, stream);
        const double us2 = fusekit::bench::median_us(
            [&](int, cudaStream_t s) { s2 = sm90::grouped_gemm_bf16_sm90(g2, s); }, timing, stream);
        if (!s1.ok() || !s2.ok() || cudaGetLastError() != cudaSuccess) {
          std::printf("tune moe: %s failed: %s %s\n", sm90::gemm_tile_name(kTiles[ti]), s1.to_string().c_str(),
                      s2.to_string().c_str());
          return 1;
        }
        row.us1[ti] = us1;
        row.us2[ti] = us2;
        const double flops1 = 2.0 * pairs * double(2 * mc.I) * mc.H, flops2 = 2.0 * pairs * double(mc.H) * mc.I;
        for (int which = 0; which < 2; ++which) {
          fusekit::bench::BenchRecord r;
          r.op = which == 0 ? "moe_gemm1" : "moe_gemm2";
          r.impl = std::string("fusekit_sm90_") + sm90::gemm_tile_name(kTiles[ti]);
          r.case_name = mc.name;
          r.params_json = params_json;
          r.tokens = T;
          r.median_us = which == 0 ? us1 : us2;
          r.tflops = (which == 0 ? flops1 : flops2) / (r.median_us * 1e-6) / 1e12;
          run.records.push_back(r);
        }
      }
      const sm90::Sm90MoeConfig fallback =
          sm90::heuristic_sm90_config(sm90::MoeProblem{mc.E, mc.k, mc.H, mc.I, T, sms, layout, prop_name.c_str()});
      const std::vector<sm90::TilePair> pairs_to_time =
          sm90::tuner_candidate_pairs(kTiles, row.us1, row.us2, kNumTiles, {fallback.gemm1, fallback.gemm2});
      std::vector<double> pair_us;
      for (const sm90::TilePair& pair : pairs_to_time) {
        const sm90::GroupedGemmArgs g1 = gemm1_args(pair.gemm1), g2 = gemm2_args(pair.gemm2);
        fusekit::Status s1, s2;
        const double us = fusekit::bench::median_us(
            [&](int, cudaStream_t s) {
              s1 = sm90::grouped_gemm_bf16_sm90(g1, s);
              if (s1.ok()) s2 = sm90::grouped_gemm_bf16_sm90(g2, s);
            },
            timing, stream);
        if (!s1.ok() || !s2.ok() || cudaGetLastError() != cudaSuccess) {
          std::printf("tune moe: pair %s + %s failed: %s %s\n", sm90::gemm_tile_name(g1.tile), sm90::gemm_tile_name(g2.tile),
                      s1.to_string().c_str(), s2.to_string().c_str());
          return 1;
        }
        pair_us.push_back(us);
        fusekit::bench::BenchRecord r;
        r.op = "moe_gemm_pair";
        r.impl = std::string("fusekit_sm90_") + sm90::gemm_tile_name(g1.tile) + "+" + sm90::gemm_tile_name(g2.tile);
        r.case_name = mc.name;
        r.params_json = params_json;
        r.tokens = T;
        r.median_us = us;
        r.tflops = 6.0 * pairs * double(mc.H) * mc.I / (us * 1e-6) / 1e12;
        run.records.push_back(r);
      }
      const std::size_t kept = sm90::tuner_pick_pair(pair_us);
      row.best1 = pairs_to_time[kept].gemm1;
      row.best2 = pairs_to_time[kept].gemm2;
      row.pair_us = pair_us[kept];
      const double heuristic_pair_us = pair_us.front();
      std::printf("%-16s T=%6lld  gemm1 us:", mc.name, static_cast<long long>(T));
      auto print_us = [](double us) { std::isinf(us) ? std::printf(" %8s", "-") : std::printf(" %8.1f", us); };
      for (int ti = 0; ti < kNumTiles; ++ti) print_us(row.us1[ti]);
      std::printf("  gemm2 us:");
      for (int ti = 0; ti < kNumTiles; ++ti) print_us(row.us2[ti]);
      std::printf("  -> %s + %s, pair %.1f us (heuristic's pair %.1f; %zu pairs timed)\n", sm90::gemm_tile_name(row.best1),
                  sm90::gemm_tile_name(row.best2), row.pair_us, heuristic_pair_us, pairs_to_time.size());
      std::fflush(stdout);
      rows.push_back(row);
    }
  }
  cudaStreamDestroy(stream);

  // Table rows: each tuned T serves up to the geometric midpoint to its neighbours.
  std::ostringstream header;
  header << "// Generated by `fusekit tune moe` on " << run.device << " (" << sms << " SMs), " << run.date
         << ", commit " << run.commit << ".\n// Re-run the tuner to change it. Rows: {device name, E, top_k, H, I, SM count, "
            "T lo, T hi, gemm1 tile, gemm2 tile}.\n";
  std::vector<std::string> table_rows;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const TunedRow& r = rows[i];
    const bool first = i == 0 || rows[i - 1].mc != r.mc;
    const bool last = i + 1 == rows.size() || rows[i + 1].mc != r.mc;
    const std::int64_t lo = first ? 1 : static_cast<std::int64_t>(std::sqrt(double(rows[i - 1].tokens) * r.tokens)) + 1;
    const std::int64_t hi = last ? std::numeric_limits<std::int32_t>::max()
                                 : static_cast<std::int64_t>(std::sqrt(double(rows[i + 1].tokens) * r.tokens));
    std::ostringstream row;
    row << "    {" << fusekit::tools::cpp_string_literal(prop_name) << ", " << r.mc->E << ", " << r.mc->k << ", " << r.mc->H << ", " << r.mc->I << ", " << sms
        << ", " << lo << ", " << hi << ", " << sm90::gemm_tile_info(r.best1).enum_name << ", " << sm90::gemm_tile_info(r.best2).enum_name << "},  // "
        << r.mc->name << " T=" << r.tokens;
    table_rows.push_back(row.str());
  }
  // --write over an existing table keeps the rows this run did not tune and the table's notes.
  std::string old_table;
  if (args.has("write")) {
    std::ifstream old(args.get("write", ""));
    old_table.assign(std::istreambuf_iterator<char>(old), std::istreambuf_iterator<char>());
  }
  const std::string table = fusekit::tools::merge_tuned_table(old_table, header.str(), table_rows);
  std::printf("\n%s", table.c_str());
  if (args.has("write")) {
    std::ofstream f(args.get("write", ""));
    f << table;
    if (!f) {
      std::printf("tune moe: cannot write %s\n", args.get("write", "").c_str());
      return 1;
    }
  }
  if (!fusekit::bench::write_json_if_requested(run, args.get("json", ""), "tune moe")) return 1;
  return 0;
}
#else
int tune_moe(const fusekit::cli::Args&) {
  std::printf("tune moe: this build has no CUDA backend\n");
  return 1;
}
#endif

FUSEKIT_CLI_COMMAND("tune", "moe", "time the Hopper MoE GEMM tiles per shape and T; --write the tuned table",
                    tune_moe);

}  // namespace
