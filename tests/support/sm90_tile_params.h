// Test parameters over every compiled sm_90 GEMM tile (sm90::kGemmTileInfo), so a tile added
// there is tested by every suite without another list to keep.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "cuda/moe/sm90/grouped_gemm_bf16_sm90.h"

namespace fusekit::testing {

using TileLayout = std::tuple<cuda_moe::sm90::GemmTile, MoeWeightLayout>;

// Every (tile, weight layout) the tile is compiled for, in enum order.
inline std::vector<TileLayout> supported_tile_layouts() {
  std::vector<TileLayout> params;
  for (const auto& info : cuda_moe::sm90::kGemmTileInfo)
    for (MoeWeightLayout layout : {MoeWeightLayout::kNK, MoeWeightLayout::kKN})
      if (cuda_moe::sm90::gemm_tile_supports(info.tile, layout)) params.emplace_back(info.tile, layout);
  return params;
}

// "kPingpong64x128_NK": the test names say which tile failed.
inline std::string tile_layout_name(const ::testing::TestParamInfo<TileLayout>& p) {
  return std::string(cuda_moe::sm90::gemm_tile_info(std::get<0>(p.param)).enum_name) +
         (std::get<1>(p.param) == MoeWeightLayout::kNK ? "_NK" : "_KN");
}
inline std::string tile_name(const ::testing::TestParamInfo<cuda_moe::sm90::GemmTile>& p) {
  return cuda_moe::sm90::gemm_tile_info(p.param).enum_name;
}

}  // namespace fusekit::testing
