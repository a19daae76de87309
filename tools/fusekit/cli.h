// Command registry and argument parsing for the fusekit CLI.
//
//   fusekit demo                  every registered demo, in order
//   fusekit verify <op> [opts]    CUDA (and CPU) against the CPU oracle on named cases
//   fusekit bench <op> [opts]     timings; --json PATH writes bench/results-format JSON
//   fusekit tune <op> [opts]      offline config search
//
// Each operator registers its commands from its own file with FUSEKIT_CLI_COMMAND.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fusekit::cli {

struct Args {
  std::vector<std::string> positional;        // after "<verb> <op>"
  std::map<std::string, std::string> options;  // --key value, --flag -> "1"
  std::string command_line;                    // the whole command, for repro fields

  bool has(const std::string& key) const { return options.count(key) > 0; }
  std::string get(const std::string& key, const std::string& fallback) const;
  std::int64_t get_int(const std::string& key, std::int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  // "--tokens 1,8,64" -> {1, 8, 64}
  std::vector<std::int64_t> get_int_list(const std::string& key, const std::vector<std::int64_t>& fallback) const;
};

using CommandFn = int (*)(const Args&);

struct Command {
  std::string verb;     // demo | verify | bench | tune
  std::string op;       // qk-norm | moe | moe-ep ...
  std::string summary;  // one line for `fusekit help`
  CommandFn run;
};

bool register_command(const Command& command);
const std::vector<Command>& commands();

}  // namespace fusekit::cli

#define FUSEKIT_CLI_CONCAT_(a, b) a##b
#define FUSEKIT_CLI_CONCAT(a, b) FUSEKIT_CLI_CONCAT_(a, b)
#define FUSEKIT_CLI_COMMAND(verb, op, summary, fn)                                      \
  static const bool FUSEKIT_CLI_CONCAT(fusekit_cli_registered_, __LINE__) =             \
      ::fusekit::cli::register_command(::fusekit::cli::Command{verb, op, summary, fn})
