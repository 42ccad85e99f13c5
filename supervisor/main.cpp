// tricorn: the command line. Builds the configuration, then hands over to the master.
#include "common/app_loader.hpp"
#include "common/control.hpp"
#include "common/log.hpp"
#include "config/config.hpp"
#include "supervisor/master.hpp"

#include <fmt/format.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace {

// `tricorn status|reload|stop [--control-socket PATH | -c FILE]`: one command over the
// master's control socket. Exit codes: 0 done, 1 the master refused or the reload
// failed, 2 usage, 3 no master answers at that socket.
int run_control_command(const std::string& command, const std::vector<std::string>& args) {
  using namespace tricorn;
  std::string path;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if ((a == "--control-socket" || a == "-c" || a == "--config") && i + 1 < args.size()) {
      if (a == "--control-socket") {
        path = args[++i];
        continue;
      }
      std::ifstream in(args[++i]);
      std::stringstream text;
      text << in.rdbuf();
      try {
        path = config::load_yaml_text(text.str(), args[i]).control_socket;
      } catch (const config::ConfigError& e) {
        fmt::print(stderr, "tricorn {}: {}\n", command, e.what());
        return control::kExitConfigError;
      }
    } else if (a.starts_with("--control-socket=")) {
      path = a.substr(17);
    } else {
      fmt::print(stderr, "usage: tricorn {} [--control-socket PATH | -c FILE]\n", command);
      return control::kExitConfigError;
    }
  }
  if (path.empty()) {
    fmt::print(stderr,
               "tricorn {}: no control socket (set control_socket, or give --control-socket)\n",
               command);
    return control::kExitConfigError;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
    fmt::print(stderr, "tricorn {}: no master at {}: {}\n", command, path, std::strerror(errno));
    return 3;
  }
  std::string line = command + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0) return 3;
  std::string answer;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;)
    answer.append(buf, static_cast<size_t>(n));
  ::close(fd);
  fmt::print("{}", answer);
  if (answer.empty()) return 3;
  return answer.starts_with("reload failed") || answer.starts_with("reload ignored") ||
                 answer.starts_with("error")
             ? 1
             : 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace tricorn;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "status" || args[0] == "reload" || args[0] == "stop"))
    return run_control_command(args[0], {args.begin() + 1, args.end()});
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
