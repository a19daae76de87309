// The tuned-table file the tuner writes (src/cuda/moe/sm90/tuned_configs_sm90_<card>.inc): comment
// lines, then one C++ row per (card, shape, T range). A run tunes some shapes (`--cases`) on one
// card; writing its rows over a table keeps every row it did not re-tune (other shapes, and other
// cards that share the file: H100 SXM and PCIe both read the h100 file), so one re-tune does not
// drop the others. Pure text functions (tested on the CPU: tests/cpu/tuned_table_test.cpp).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace fusekit::tools {

// The shape a row serves: {E, top_k, H, I}.
using TunedShape = std::array<long long, 4>;

// What a row is tuned for, as the forward matches it (gemm_config_sm90.cpp choose_sm90_config):
// the card (cudaDeviceProp::name and SM count) and the shape. Rows of one key differ only in T.
struct TunedRowKey {
  std::string device;  // unescaped
  long long sm_count = 0;
  TunedShape shape{};
  bool operator==(const TunedRowKey& o) const {
    return device == o.device && sm_count == o.sm_count && shape == o.shape;
  }
};

// `text` as a C++ string literal: a device name is the driver's, and a quote or backslash in it
// would otherwise end the literal early (or not compile) in the .inc.
inline std::string cpp_string_literal(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The key of a row line `    {"<device>", E, top_k, H, I, SM count, ...`; false for any other line,
// commented-out rows included (only a line that starts with `{"`, after indentation, is a row).
inline bool tuned_row_key(const std::string& line, TunedRowKey& key) {
  const std::size_t open = line.find_first_not_of(" \t");
  if (open == std::string::npos || line.compare(open, 2, "{\"") != 0) return false;
  std::string device;
  std::size_t at = open + 2;
  for (; at < line.size() && line[at] != '"'; ++at) {
    if (line[at] == '\\' && at + 1 < line.size()) ++at;  // the escaped character is part of the name
    device += line[at];
  }
  if (at >= line.size()) return false;
  TunedRowKey parsed;
  parsed.device = device;
  if (std::sscanf(line.c_str() + at + 1, " , %lld , %lld , %lld , %lld , %lld", &parsed.shape[0], &parsed.shape[1],
                  &parsed.shape[2], &parsed.shape[3], &parsed.sm_count) != 5) {
    return false;
  }
  key = parsed;
  return true;
}

// The table after a run. Its header: `header` (this run's provenance), the shapes it kept from the
// old table, then the old header's lines (hand-written notes and earlier provenance), each line
// once. Its rows: the old table's, with each key this run tuned replaced, in place, by `new_rows`
// of that key; keys the old table lacked come last. Every other old line after the first row (a
// commented-out row, a note, a blank line) stays where it was. CRLF input is read as LF; the
// output is LF.
inline std::string merge_tuned_table(const std::string& old_table, const std::string& header,
                                     const std::vector<std::string>& new_rows) {
  auto contains = [](const auto& list, const auto& item) {
    return std::find(list.begin(), list.end(), item) != list.end();
  };
  std::vector<TunedRowKey> tuned;
  for (const std::string& row : new_rows) {
    TunedRowKey k;
    if (tuned_row_key(row, k) && !contains(tuned, k)) tuned.push_back(k);
  }
  // A kept row is named by its trailing comment (`// <case> T=<n>`), and by its card where this
  // run tuned another (its rows are not this run's to redo).
  auto kept_label = [&](const std::string& line, const TunedRowKey& k) {
    const std::size_t at = line.find("// ", line.rfind('}'));  // after the row: a device name may hold "// "
    std::string name = at == std::string::npos ? "" : line.substr(at + 3, line.find(" T=", at) - at - 3);
    if (name.empty()) {
      name = "E=" + std::to_string(k.shape[0]) + " k=" + std::to_string(k.shape[1]) + " H=" +
             std::to_string(k.shape[2]) + " I=" + std::to_string(k.shape[3]);
    }
    const bool same_card = std::any_of(tuned.begin(), tuned.end(), [&](const TunedRowKey& t) {
      return t.device == k.device && t.sm_count == k.sm_count;
    });
    return same_card ? name : name + " on " + k.device + " (" + std::to_string(k.sm_count) + " SMs)";
  };

  std::vector<TunedRowKey> emitted;
  std::ostringstream rows;
  auto emit_new = [&](const TunedRowKey& k) {
    for (const std::string& row : new_rows) {
      TunedRowKey rk;
      if (tuned_row_key(row, rk) && rk == k) rows << row << "\n";
    }
    emitted.push_back(k);
  };
  std::vector<std::string> old_header, kept_labels;
  bool in_header = true;
  std::istringstream in(old_table);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    TunedRowKey k;
    if (!tuned_row_key(line, k)) {
      if (!in_header) {
        rows << line << "\n";
      } else if (line.find_first_not_of(" \t") != std::string::npos) {
        old_header.push_back(line);
      }
      continue;
    }
    in_header = false;
    if (!contains(tuned, k)) {
      rows << line << "\n";
      const std::string label = kept_label(line, k);
      if (!contains(kept_labels, label)) kept_labels.push_back(label);
    } else if (!contains(emitted, k)) {
      emit_new(k);
    }
  }
  for (const TunedRowKey& k : tuned) {
    if (!contains(emitted, k)) emit_new(k);
  }

  std::vector<std::string> header_lines;
  auto add_header_line = [&](const std::string& line) {
    if (!contains(header_lines, line)) header_lines.push_back(line);
  };
  std::istringstream new_header(header);
  for (std::string line; std::getline(new_header, line);) add_header_line(line);
  if (!kept_labels.empty()) {
    std::string kept = "// Not re-tuned by that run, kept from the table it replaced:";
    for (std::size_t i = 0; i < kept_labels.size(); ++i) kept += (i ? ", " : " ") + kept_labels[i];
    add_header_line(kept + ".");
  }
  // One line introduces the old header. After more runs it stands once, below this run's lines;
  // below it each earlier run's lines start at its "Generated by" line, newest first.
  const std::string carried = "// Carried over from the header of the table that run replaced:";
  if (std::any_of(old_header.begin(), old_header.end(),
                  [&](const std::string& l) { return !contains(header_lines, l) && l != carried; })) {
    add_header_line(carried);
    for (const std::string& line : old_header) add_header_line(line);
  }
  std::string out;
  for (const std::string& line : header_lines) out += line + "\n";
  return out + rows.str();
}

}  // namespace fusekit::tools
