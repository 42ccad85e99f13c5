// tricorn: the command line. Builds the configuration, then hands over to the master.
#include "common/app_loader.hpp"
#include "common/control.hpp"
#include "common/log.hpp"
#include "config/config.hpp"
#include "supervisor/master.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <string>
#include <vector>

extern char** environ;

int main(int argc, char** argv) {
  using namespace tricorn;
  std::vector<std::string> args(argv + 1, argv + argc);
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.emplace_back(*e);

  config::Invocation inv;
  try {
    inv = config::load(args, env);
  } catch (const config::ConfigError& e) {
    fmt::print(stderr, "tricorn: error: {}\n", e.what());
    return control::kExitConfigError;
  }
  switch (inv.action) {
    case config::Action::help: fmt::print("{}", config::usage()); return 0;
    case config::Action::version: fmt::print("tricorn {}\n", TRICORN_VERSION); return 0;
    case config::Action::reference: fmt::print("{}", config::reference_markdown()); return 0;
    case config::Action::check_config:
      try {
        load_app(inv.config.app_path(), inv.config.app_symbol());
      } catch (const std::exception& e) {
        fmt::print(stderr, "tricorn: error: {}\n", e.what());
        return control::kExitAppLoadError;
      }
      fmt::print("configuration OK: app {}, {} worker(s), bind {}\n", inv.config.app,
                 inv.config.workers, fmt::join(inv.config.bind, ", "));
      return 0;
    case config::Action::serve: break;
  }
  log::configure(inv.config.errorlog, inv.config.loglevel);
  log::configure_access(inv.config.accesslog);
  supervisor::Master master(std::move(inv.config), std::move(args), std::move(env));
  return master.run();
}
