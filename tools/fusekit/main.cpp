#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cli.h"
#include "fusekit/fusekit.h"

namespace fusekit::cli {

std::string Args::get(const std::string& key, const std::string& fallback) const {
  auto it = options.find(key);
  return it == options.end() ? fallback : it->second;
}
std::int64_t Args::get_int(const std::string& key, std::int64_t fallback) const {
  auto it = options.find(key);
  return it == options.end() ? fallback : std::strtoll(it->second.c_str(), nullptr, 10);
}
double Args::get_double(const std::string& key, double fallback) const {
  auto it = options.find(key);
  return it == options.end() ? fallback : std::strtod(it->second.c_str(), nullptr);
}
std::vector<std::int64_t> Args::get_int_list(const std::string& key,
                                             const std::vector<std::int64_t>& fallback) const {
  auto it = options.find(key);
  if (it == options.end()) return fallback;
  std::vector<std::int64_t> out;
  std::size_t pos = 0;
  const std::string& s = it->second;
  while (pos < s.size()) {
    std::size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(std::strtoll(s.substr(pos, comma - pos).c_str(), nullptr, 10));
    pos = comma + 1;
  }
  return out;
}

static std::vector<Command>& registry() {
  static std::vector<Command> r;
  return r;
}
bool register_command(const Command& command) {
  registry().push_back(command);
  return true;
}
const std::vector<Command>& commands() { return registry(); }

}  // namespace fusekit::cli

namespace {

using fusekit::cli::Args;
using fusekit::cli::Command;

int usage() {
  std::printf("fusekit %s — fused kernels for LLM inference\n\nusage:\n", fusekit::version());
  auto cmds = fusekit::cli::commands();
  std::sort(cmds.begin(), cmds.end(),
            [](const Command& a, const Command& b) { return a.verb + a.op < b.verb + b.op; });
  for (const Command& c : cmds) std::printf("  fusekit %-6s %-10s %s\n", c.verb.c_str(), c.op.c_str(), c.summary.c_str());
  std::printf("\n  fusekit demo              runs every demo above\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "help" || std::string(argv[1]) == "--help") return usage();
  const std::string verb = argv[1];
  Args args;
  for (int i = 0; i < argc; ++i) args.command_line += (i ? " " : "") + std::string(argv[i]);
  std::string op;
  int i = 2;
  if (verb != "demo" && i < argc && argv[i][0] != '-') op = argv[i++];
  for (; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) == 0) {
      std::string key = a.substr(2), value = "1";
      const auto eq = key.find('=');
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (i + 1 < argc && argv[i + 1][0] != '-') {
        value = argv[++i];
      }
      args.options[key] = value;
    } else {
      args.positional.push_back(a);
    }
  }

  auto cmds = fusekit::cli::commands();
  std::sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) { return a.op < b.op; });
  if (verb == "demo") {
    // qk-norm first, then moe: the order the operators were built in.
    std::stable_sort(cmds.begin(), cmds.end(), [](const Command& a, const Command& b) {
      return (a.op.rfind("qk", 0) == 0) > (b.op.rfind("qk", 0) == 0);
    });
    int rc = 0, ran = 0;
    for (const Command& c : cmds) {
      if (c.verb != "demo" || (!op.empty() && c.op != op)) continue;
      std::printf("==== demo %s ====\n", c.op.c_str());
      rc |= c.run(args);
      ++ran;
    }
    if (ran == 0) std::printf("no demos registered\n");
    std::printf("demo: %s\n", rc == 0 ? "all checks passed" : "SOME CHECKS FAILED");
    return rc;
  }
  for (const Command& c : cmds) {
    if (c.verb == verb && c.op == op) return c.run(args);
  }
  std::fprintf(stderr, "fusekit: unknown command '%s %s'\n\n", verb.c_str(), op.c_str());
  return usage();
}
