// One validated, immutable description of how tricorn should run, built from defaults,
// the YAML file, the environment and the command line (lowest precedence first).
// Building it has no side effects: `tricorn --check-config` and a HUP use the same code.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tricorn::config {

enum class LogLevel { debug, info, warning, error, critical };

struct Config {
  std::string app;          // "path/to/lib.so[:symbol]"
  std::string config_file;  // as given with -c, empty if none
  std::vector<std::string> bind;
  int workers = 1;
  double timeout = 30;
  double graceful_timeout = 30;
  double keepalive = 2;
  double header_timeout = 10;
  double body_timeout = 60;
  double send_timeout = 60;
  int backlog = 2048;
  int max_requests = 0;
  int max_requests_jitter = 0;
  int limit_request_line = 4094;
  int limit_request_fields = 100;
  int limit_request_field_size = 8190;
  bool preload_app = false;
  std::string accesslog;       // empty: off; "-": stdout
  std::string errorlog = "-";  // "-": stderr
  LogLevel loglevel = LogLevel::info;
  std::string access_log_format;
  bool access_log_json = false;
  std::string pidfile;
  std::string root_path;
  std::uint64_t limit_request_body = 0;  // 0: no limit
  int worker_connections = 1000;
  std::string user;
  std::string group;
  int umask = 0;
  int unix_socket_mode = 0666;
  std::string unix_socket_owner;  // "USER[:GROUP]"; empty: the workers' user and group
  std::string certfile;
  std::string keyfile;
  int http2_max_concurrent_streams = 100;
  int http2_initial_window_size = 262144;
  int http2_max_frame_size = 16384;
  int http2_max_header_list_size = 65536;
  double http2_idle_timeout = 60;
  std::string lifespan = "auto";  // auto, on, off
  std::string forwarded_allow_ips = "127.0.0.1,::1";
  bool proxy_protocol = false;
  std::string proxy_allow_ips = "127.0.0.1,::1";
  std::string health_path;
  std::string metrics_bind;
  std::string control_socket;
  int threads = 1;
  std::uint64_t ws_max_size = 16 * 1024 * 1024;
  double ws_ping_interval = 20;  // 0: no pings
  double ws_ping_timeout = 20;

  std::string app_path() const;    // before ':'
  std::string app_symbol() const;  // after ':', "app" by default
};

// A bad setting: `where` names its origin ("tricorn.yaml:7", "--workers",
// "WEB_CONCURRENCY"), `key` the setting's name.
struct ConfigError : std::runtime_error {
  ConfigError(std::string where, std::string key, const std::string& what);
  std::string where;
  std::string key;
};

// What the command line asked for besides settings.
enum class Action { serve, check_config, version, help, reference };

struct Invocation {
  Action action = Action::serve;
  Config config;
};

// Parses argv (without argv[0]) and the environment; reads the YAML file named by -c.
// Throws ConfigError.
Invocation load(std::span<const std::string> args, const std::vector<std::string>& environ);

// Only the YAML part, for tests: settings from `text` as if read from `file_name`.
Config load_yaml_text(std::string_view text, std::string_view file_name);

// The table behind the parser, for --help and the reference docs.
struct SettingDoc {
  std::string_view key;
  std::string_view flags;
  std::string_view env;
  std::string_view default_value;
  std::string_view help;
  std::string_view on_reload;
};
std::vector<SettingDoc> setting_docs();
std::string usage();
std::string reference_markdown();  // docs/configuration.md

std::string_view to_string(LogLevel level);

// A setting given in seconds (timeout, keepalive, ...) as a steady-clock duration.
inline std::chrono::steady_clock::duration seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace tricorn::config
