#include "config/config.hpp"

#include "common/networks.hpp"

#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <algorithm>
#include <charconv>
#include <cmath>

namespace tricorn::config {
namespace {

using Field =
    std::variant<int Config::*, double Config::*, bool Config::*, std::string Config::*,
                 std::vector<std::string> Config::*, LogLevel Config::*, std::uint64_t Config::*>;

// Every setting, once. Names and defaults follow Gunicorn where it has the setting.
struct Setting {
  std::string_view key;
  std::string_view long_flag;  // without "--"; '_' and '-' are interchangeable on input
  char short_flag;
  std::string_view env;
  Field field;
  std::string_view default_value;
  std::string_view help;
  std::string_view on_reload;
};

constexpr std::string_view kReloadNew = "new workers use the new value";

const Setting kSettings[] = {
    {"app", "", 0, "", &Config::app, "",
     "The application: a shared object and an optional symbol, PATH[:SYMBOL] (default symbol "
     "`app`). Usually given as the positional argument.",
     "new workers load the file anew (not with preload_app)"},
    {"bind", "bind", 'b', "", &Config::bind, "127.0.0.1:8000",
     "A socket to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N. Repeatable.",
     "added binds open at once, removed ones close after the old workers are gone"},
    {"workers", "workers", 'w', "WEB_CONCURRENCY", &Config::workers, "1",
     "The number of worker processes.", "the worker count converges on the new value"},
    {"timeout", "timeout", 't', "", &Config::timeout, "30",
     "Seconds a worker may go without a heartbeat from its event loop before it is killed "
     "(SIGABRT, then SIGKILL) and replaced.",
     kReloadNew},
    {"graceful_timeout", "graceful-timeout", 0, "", &Config::graceful_timeout, "30",
     "Seconds a retiring worker has to finish its requests before it is killed.", kReloadNew},
    {"keepalive", "keep-alive", 0, "", &Config::keepalive, "2",
     "Seconds an idle keep-alive connection is kept open.", kReloadNew},
    {"header_timeout", "header-timeout", 0, "", &Config::header_timeout, "10",
     "Seconds a client has to send a complete request head once it started one; after it, "
     "408 and the connection is closed.",
     kReloadNew},
    {"body_timeout", "body-timeout", 0, "", &Config::body_timeout, "60",
     "Seconds to wait for the next piece of a request body (nginx's client_body_timeout).",
     kReloadNew},
    {"send_timeout", "send-timeout", 0, "", &Config::send_timeout, "60",
     "Seconds a client may take to accept the next piece of a response (nginx's "
     "send_timeout).",
     kReloadNew},
    {"backlog", "backlog", 0, "", &Config::backlog, "2048",
     "The listen backlog of sockets tricorn binds.", "applies to newly opened binds"},
    {"max_requests", "max-requests", 0, "", &Config::max_requests, "0",
     "Requests a worker serves before it is replaced gracefully; 0 disables recycling.",
     kReloadNew},
    {"max_requests_jitter", "max-requests-jitter", 0, "", &Config::max_requests_jitter, "0",
     "A random 0..N added to max_requests per worker, so workers do not recycle together.",
     kReloadNew},
    {"limit_request_line", "limit-request-line", 0, "", &Config::limit_request_line, "4094",
     "Maximum bytes of the request line; longer gets 414.", kReloadNew},
    {"limit_request_fields", "limit-request-fields", 0, "", &Config::limit_request_fields, "100",
     "Maximum number of header fields; more gets 431.", kReloadNew},
    {"limit_request_field_size", "limit-request-field-size", 0, "",
     &Config::limit_request_field_size, "8190",
     "Maximum bytes of one header field line; larger gets 431.", kReloadNew},
    {"limit_request_body", "limit-request-body", 0, "", &Config::limit_request_body, "0",
     "Maximum bytes of a request body; larger gets 413. 0 means no limit (Gunicorn and "
     "Uvicorn have none).",
     kReloadNew},
    {"worker_connections", "worker-connections", 0, "", &Config::worker_connections, "1000",
     "Connections one worker serves at once; at the cap it stops accepting (connections wait "
     "in the listen queue for another worker) and resumes below it.",
     kReloadNew},
    {"user", "user", 'u', "", &Config::user, "",
     "Run workers as this user (name or id). The master keeps its privileges to bind.", kReloadNew},
    {"group", "group", 'g', "", &Config::group, "",
     "Run workers as this group (name or id); supplementary groups are cleared.", kReloadNew},
    {"umask", "umask", 'm', "", &Config::umask, "0", "File mode creation mask of the workers.",
     kReloadNew},
    {"unix_socket_mode", "unix-socket-mode", 0, "", &Config::unix_socket_mode, "0666",
     "File mode (octal) of the unix sockets tricorn creates for `unix:` binds (Uvicorn's "
     "0666; use 0660 with unix_socket_owner to let only one group connect).",
     "applies to newly opened binds"},
    {"unix_socket_owner", "unix-socket-owner", 0, "", &Config::unix_socket_owner, "",
     "USER[:GROUP] (names or ids) to own the unix sockets tricorn creates; empty: the user "
     "and group workers run as (Gunicorn's behaviour), or the master's.",
     "applies to newly opened binds"},
    {"preload_app", "preload", 0, "", &Config::preload_app, "false",
     "Load the app in the master before forking. New app code then needs a binary upgrade "
     "(USR2) instead of a HUP.",
     "ignored: needs a restart or USR2"},
    {"accesslog", "access-logfile", 0, "", &Config::accesslog, "",
     "Access log file, `-` for stdout; off when empty.", "reopened"},
    {"errorlog", "error-logfile", 0, "", &Config::errorlog, "-", "Error log file, `-` for stderr.",
     "reopened"},
    {"loglevel", "log-level", 0, "", &Config::loglevel, "info",
     "debug, info, warning, error or critical.", "applies at once"},
    {"access_log_format", "access-logformat", 0, "", &Config::access_log_format,
     R"(%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s")",
     "Access log line, with Gunicorn's atoms: h l u t r m U q H s B b f a T M D L p and "
     "{header}i.",
     kReloadNew},
    {"access_log_json", "access-log-json", 0, "", &Config::access_log_json, "false",
     "Write the access log as JSON lines (time, remote_addr, method, path, query, protocol, "
     "status, bytes, duration_us, referer, user_agent, pid) instead of access_log_format.",
     kReloadNew},
    {"pidfile", "pid", 0, "", &Config::pidfile, "", "A file to write the master's pid to.",
     "ignored: needs a restart"},
    {"root_path", "root-path", 0, "", &Config::root_path, "",
     "ASGI root_path: the prefix under which the app is mounted.", kReloadNew},
    {"certfile", "certfile", 0, "", &Config::certfile, "",
     "TLS certificate chain (PEM). With keyfile set, every bind serves TLS, with ALPN h2 "
     "and http/1.1 (Gunicorn's semantics).",
     "new workers read the files anew"},
    {"keyfile", "keyfile", 0, "", &Config::keyfile, "", "TLS private key (PEM).",
     "new workers read the file anew"},
    {"http2_max_concurrent_streams", "http2-max-concurrent-streams", 0, "",
     &Config::http2_max_concurrent_streams, "100",
     "SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once.", kReloadNew},
    {"http2_initial_window_size", "http2-initial-window-size", 0, "",
     &Config::http2_initial_window_size, "262144",
     "Bytes of request body a client may send on a stream before the app reads them.", kReloadNew},
    {"http2_max_frame_size", "http2-max-frame-size", 0, "", &Config::http2_max_frame_size, "16384",
     "SETTINGS_MAX_FRAME_SIZE, 16384 to 16777215.", kReloadNew},
    {"http2_max_header_list_size", "http2-max-header-list-size", 0, "",
     &Config::http2_max_header_list_size, "65536",
     "Largest request header list (RFC 9113 size: name + value + 32 per field); larger gets "
     "431.",
     kReloadNew},
    {"http2_idle_timeout", "http2-idle-timeout", 0, "", &Config::http2_idle_timeout, "60",
     "Seconds an HTTP/2 connection with no open stream is kept before a GOAWAY closes it.",
     kReloadNew},
    {"forwarded_allow_ips", "forwarded-allow-ips", 0, "FORWARDED_ALLOW_IPS",
     &Config::forwarded_allow_ips, "127.0.0.1,::1",
     "Peers (addresses or CIDR networks, comma-separated, `*` for all) whose Forwarded or "
     "X-Forwarded-For / X-Forwarded-Proto headers set the scope's client and scheme. Unix "
     "socket peers are always trusted.",
     kReloadNew},
    {"proxy_protocol", "proxy-protocol", 0, "", &Config::proxy_protocol, "false",
     "Every connection starts with a PROXY protocol header (v1 or v2, as HAProxy and AWS "
     "load balancers send), which gives the client's address.",
     kReloadNew},
    {"proxy_allow_ips", "proxy-allow-ips", 0, "", &Config::proxy_allow_ips, "127.0.0.1,::1",
     "Peers allowed to send a PROXY header; connections from others are closed.", kReloadNew},
    {"health_path", "health-path", 0, "", &Config::health_path, "",
     "A path the server answers itself, before the app: 200 `ok` while the worker serves, 503 "
     "`draining` from the moment a graceful stop or reload retires it (for load balancer and "
     "Kubernetes probes). Empty: off.",
     kReloadNew},
    {"metrics_bind", "metrics-bind", 0, "", &Config::metrics_bind, "",
     "HOST:PORT (or unix:PATH) where the master serves Prometheus metrics at /metrics: "
     "requests by method and status class, bytes, a duration histogram, open connections "
     "by protocol, HTTP/2 streams, worker restarts by cause, reloads and upgrades by outcome. "
     "Empty: off.",
     "ignored: needs a restart (kept across USR2)"},
    {"control_socket", "control-socket", 0, "", &Config::control_socket, "",
     "A unix socket (created 0600) for `tricorn status`, `tricorn reload` and `tricorn stop`. "
     "Empty: off.",
     "ignored: needs a restart"},
    {"lifespan", "lifespan", 0, "", &Config::lifespan, "auto",
     "ASGI lifespan: `auto` runs startup and shutdown if the app implements them, `on` "
     "requires it, `off` skips it (Uvicorn's setting).",
     kReloadNew},
    {"threads", "threads", 0, "", &Config::threads, "1",
     "Threads per worker for a blocking handler (TRICORN_SYNC_APP), as Gunicorn's gthread; "
     "unused by coroutine apps.",
     kReloadNew},
    {"ws_max_size", "ws-max-size", 0, "", &Config::ws_max_size, "16777216",
     "Largest WebSocket message a client may send, in bytes; larger closes with 1009.", kReloadNew},
    {"ws_ping_interval", "ws-ping-interval", 0, "", &Config::ws_ping_interval, "20",
     "Seconds between WebSocket pings from the server; 0 sends none.", kReloadNew},
    {"ws_ping_timeout", "ws-ping-timeout", 0, "", &Config::ws_ping_timeout, "20",
     "Seconds a WebSocket client has to answer a ping before the connection is dropped "
     "(the app hears 1011).",
     kReloadNew},
};

std::string normalise_flag(std::string_view flag) {
  std::string out(flag);
  std::replace(out.begin(), out.end(), '_', '-');
  return out;
}

const Setting* find_by_key(std::string_view key) {
  for (const auto& s : kSettings)
    if (s.key == key) return &s;
  return nullptr;
}

const Setting* find_by_flag(std::string_view flag) {
  const std::string wanted = normalise_flag(flag);
  for (const auto& s : kSettings)
    if (!s.long_flag.empty() && normalise_flag(s.long_flag) == wanted) return &s;
  return nullptr;
}

const Setting* find_by_short(char c) {
  for (const auto& s : kSettings)
    if (s.short_flag == c) return &s;
  return nullptr;
}

// Converts text to the field's type; `append` adds to lists instead of replacing them.
struct Assign {
  Config& config;
  std::string_view text;
  const std::string& where;
  const Setting& setting;
  bool append;

  [[noreturn]] void fail(std::string_view expected) const {
    throw ConfigError(where, std::string(setting.key),
                      fmt::format("expected {}, got '{}'", expected, text));
  }
  void operator()(int Config::*m) const {
    int v = 0;
    // File modes are octal, as Gunicorn's umask: "0o22", "022" or "0".
    std::string_view digits = text;
    int base = setting.key == "umask" || setting.key == "unix_socket_mode" ? 8 : 10;
    if (base == 8 && digits.starts_with("0o")) digits.remove_prefix(2);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
    if (ec != std::errc{} || end != digits.data() + digits.size()) fail("an integer");
    config.*m = v;
  }
  void operator()(std::uint64_t Config::*m) const {
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size()) fail("a number of bytes");
    config.*m = v;
  }
  void operator()(double Config::*m) const {
    std::string s(text);
    char* end = nullptr;
    double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
    if (std::isnan(v) || std::isinf(v) || end != s.c_str() + s.size()) fail("a number of seconds");
    config.*m = v;
  }
  void operator()(bool Config::*m) const {
    if (text == "true" || text == "yes" || text == "on" || text == "1")
      config.*m = true;
    else if (text == "false" || text == "no" || text == "off" || text == "0")
      config.*m = false;
    else
      fail("true or false");
  }
  void operator()(std::string Config::*m) const { config.*m = std::string(text); }
  void operator()(std::vector<std::string> Config::*m) const {
    if (!append) (config.*m).clear();
    (config.*m).emplace_back(text);
  }
  void operator()(LogLevel Config::*m) const {
    static constexpr std::pair<std::string_view, LogLevel> names[] = {
        {"debug", LogLevel::debug},
        {"info", LogLevel::info},
        {"warning", LogLevel::warning},
        {"error", LogLevel::error},
        {"critical", LogLevel::critical}};
    for (auto [name, level] : names)
      if (name == text) {
        config.*m = level;
        return;
      }
    fail("one of debug, info, warning, error, critical");
  }
};

void assign(Config& c, const Setting& s, std::string_view text, const std::string& where,
            bool append = false) {
  std::visit(Assign{c, text, where, s, append}, s.field);
}

Config defaults() {
  Config c;
  for (const auto& s : kSettings) {
    if (std::holds_alternative<std::vector<std::string> Config::*>(s.field)) {
      auto m = std::get<std::vector<std::string> Config::*>(s.field);
      (c.*m).clear();
      if (!s.default_value.empty()) (c.*m).emplace_back(s.default_value);
    } else {
      assign(c, s, s.default_value, "default");
    }
  }
  return c;
}

std::string yaml_where(std::string_view file, const YAML::Mark& mark) {
  return fmt::format("{}:{}", file, mark.line + 1);
}

void apply_yaml_node(Config& c, const std::string& file, const YAML::Node& root) {
  if (root.IsNull()) return;
  if (!root.IsMap())
    throw ConfigError(yaml_where(file, root.Mark()), "", "the file must be a mapping of settings");
  for (const auto& item : root) {
    const std::string key = item.first.Scalar();
    const std::string where = yaml_where(file, item.first.Mark());
    const Setting* s = find_by_key(key);
    if (!s) throw ConfigError(where, key, "unknown setting");
    const YAML::Node& value = item.second;
    const std::string value_where = yaml_where(file, value.Mark());
    bool is_list = std::holds_alternative<std::vector<std::string> Config::*>(s->field);
    if (value.IsSequence() && is_list) {
      auto m = std::get<std::vector<std::string> Config::*>(s->field);
      (c.*m).clear();
      for (const auto& v : value) {
        if (!v.IsScalar()) throw ConfigError(yaml_where(file, v.Mark()), key, "expected a string");
        assign(c, *s, v.Scalar(), yaml_where(file, v.Mark()), true);
      }
    } else if (value.IsScalar()) {
      assign(c, *s, value.Scalar(), value_where);
    } else if (value.IsNull()) {
      throw ConfigError(where, key, "a value is required");
    } else {
      throw ConfigError(
          value_where, key,
          is_list ? "expected a string or a list of strings" : "expected a single value");
    }
  }
}

void apply_yaml_file(Config& c, const std::string& file) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::BadFile&) {
    throw ConfigError(file, "", "cannot read the file");
  } catch (const YAML::ParserException& e) {
    throw ConfigError(yaml_where(file, e.mark), "", e.msg);
  }
  apply_yaml_node(c, file, root);
}

void validate(const Config& c) {
  auto require = [](bool ok, std::string_view key, std::string_view what) {
    if (!ok) throw ConfigError("", std::string(key), std::string(what));
  };
  require(!c.app.empty(), "app", "no application given (tricorn [options] PATH.so[:SYMBOL])");
  require(!c.bind.empty(), "bind", "at least one bind is needed");
  require(c.workers >= 1, "workers", "must be at least 1");
  require(c.timeout > 0, "timeout", "must be positive");
  require(c.graceful_timeout >= 0, "graceful_timeout", "must not be negative");
  require(c.keepalive >= 0, "keepalive", "must not be negative");
  require(c.header_timeout > 0, "header_timeout", "must be positive");
  require(c.body_timeout > 0, "body_timeout", "must be positive");
  require(c.send_timeout > 0, "send_timeout", "must be positive");
  require(c.backlog >= 1, "backlog", "must be at least 1");
  require(c.max_requests >= 0, "max_requests", "must not be negative");
  require(c.max_requests_jitter >= 0, "max_requests_jitter", "must not be negative");
  require(c.limit_request_line >= 64, "limit_request_line", "must be at least 64");
  require(c.limit_request_fields >= 1, "limit_request_fields", "must be at least 1");
  require(c.limit_request_field_size >= 64, "limit_request_field_size", "must be at least 64");
  require(c.http2_max_concurrent_streams >= 1, "http2_max_concurrent_streams",
          "must be at least 1");
  require(c.http2_initial_window_size >= 1 && c.http2_initial_window_size <= 2147483647,
          "http2_initial_window_size", "must be between 1 and 2147483647");
  require(c.http2_max_frame_size >= 16384 && c.http2_max_frame_size <= 16777215,
          "http2_max_frame_size", "must be between 16384 and 16777215");
  require(c.http2_max_header_list_size >= 1024, "http2_max_header_list_size",
          "must be at least 1024");
  require(c.http2_idle_timeout > 0, "http2_idle_timeout", "must be positive");
  require(c.worker_connections >= 1, "worker_connections", "must be at least 1");
  for (auto [list, key] : {std::pair{&c.forwarded_allow_ips, "forwarded_allow_ips"},
                           std::pair{&c.proxy_allow_ips, "proxy_allow_ips"}}) {
    try {
      Networks::parse(*list);
    } catch (const std::invalid_argument& e) {
      throw ConfigError("", key, e.what());
    }
  }
  require(c.health_path.empty() || c.health_path.starts_with('/'), "health_path",
          "must start with /");
  require(c.lifespan == "auto" || c.lifespan == "on" || c.lifespan == "off", "lifespan",
          "must be auto, on or off");
  require(c.threads >= 1 && c.threads <= 1024, "threads", "must be between 1 and 1024");
  require(c.ws_max_size >= 125, "ws_max_size", "must be at least 125");
  require(c.ws_ping_interval >= 0, "ws_ping_interval", "must not be negative");
  require(c.ws_ping_timeout > 0, "ws_ping_timeout", "must be positive");
  require(c.umask >= 0 && c.umask <= 0777, "umask", "must be between 0 and 0777");
  require(c.unix_socket_mode >= 0 && c.unix_socket_mode <= 0777, "unix_socket_mode",
          "must be between 0 and 0777");
  require(c.certfile.empty() == c.keyfile.empty(), c.certfile.empty() ? "certfile" : "keyfile",
          "certfile and keyfile go together");
}

std::string_view env_value(const std::vector<std::string>& environ, std::string_view name) {
  for (const auto& e : environ)
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
      return std::string_view(e).substr(name.size() + 1);
  return {};
}

}  // namespace

ConfigError::ConfigError(std::string where_, std::string key_, const std::string& what)
    : std::runtime_error(fmt::format("{}{}{}", where_.empty() ? "" : where_ + ": ",
                                     key_.empty() ? "" : "key '" + key_ + "': ", what)),
      where(std::move(where_)),
      key(std::move(key_)) {}

std::string Config::app_path() const {
  return app.substr(0, app.rfind(':'));
}

std::string Config::app_symbol() const {
  auto colon = app.rfind(':');
  return colon == std::string::npos || colon + 1 == app.size() ? "app" : app.substr(colon + 1);
}

Config load_yaml_text(std::string_view text, std::string_view file_name) {
  Config c = defaults();
  try {
    apply_yaml_node(c, std::string(file_name), YAML::Load(std::string(text)));
  } catch (const YAML::ParserException& e) {
    throw ConfigError(yaml_where(file_name, e.mark), "", e.msg);
  }
  return c;
}

Invocation load(std::span<const std::string> args, const std::vector<std::string>& environ) {
  Invocation inv;
  // Flags are applied after the file and the environment, so collect them first.
  std::vector<std::pair<const Setting*, std::string>> flags;
  std::vector<std::string> positional;
  std::string config_file;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    auto take_value = [&](std::string_view flag) -> std::string {
      if (i + 1 >= args.size()) throw ConfigError(std::string(flag), "", "needs a value");
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      inv.action = Action::help;
      return inv;
    }
    if (arg == "--version" || arg == "-v") {
      inv.action = Action::version;
      return inv;
    }
    if (arg == "--settings-reference") {
      inv.action = Action::reference;
      return inv;
    }
    if (arg == "--check-config") {
      inv.action = Action::check_config;
      continue;
    }
    if (arg.starts_with("--")) {
      std::string_view name = arg.substr(2);
      std::optional<std::string> value;
      if (auto eq = name.find('='); eq != std::string_view::npos) {
        value = std::string(name.substr(eq + 1));
        name = name.substr(0, eq);
      }
      if (name == "config") {
        config_file = value ? *value : take_value(arg);
        continue;
      }
      const Setting* s = find_by_flag(name);
      if (!s) throw ConfigError(std::string(arg), "", "unknown option (see --help)");
      if (std::holds_alternative<bool Config::*>(s->field) && !value) value = "true";
      flags.emplace_back(s, value ? *value : take_value(arg));
    } else if (arg.size() >= 2 && arg[0] == '-') {
      if (arg[1] == 'c') {
        config_file = arg.size() > 2 ? std::string(arg.substr(2)) : take_value(arg);
        continue;
      }
      const Setting* s = find_by_short(arg[1]);
      if (!s) throw ConfigError(std::string(arg), "", "unknown option (see --help)");
      flags.emplace_back(s, arg.size() > 2 ? std::string(arg.substr(2)) : take_value(arg));
    } else {
      positional.emplace_back(arg);
    }
  }
  if (positional.size() > 1)
    throw ConfigError("command line", "app", "more than one application given");

  Config c = defaults();
  if (!config_file.empty()) apply_yaml_file(c, config_file);
  c.config_file = config_file;
  for (const auto& s : kSettings)
    if (!s.env.empty())
      if (auto v = env_value(environ, s.env); !v.empty()) assign(c, s, v, std::string(s.env));
  bool bind_from_flags = false;
  for (const auto& [s, value] : flags) {
    bool is_bind = s->key == "bind";
    assign(c, *s, value, "--" + std::string(s->long_flag), is_bind && bind_from_flags);
    bind_from_flags = bind_from_flags || is_bind;
  }
  if (!positional.empty()) c.app = positional.front();
  validate(c);
  inv.config = std::move(c);
  return inv;
}

std::vector<SettingDoc> setting_docs() {
  std::vector<SettingDoc> docs;
  for (const auto& s : kSettings) {
    std::string_view flags = s.long_flag;
    docs.push_back({s.key, flags, s.env, s.default_value, s.help, s.on_reload});
  }
  return docs;
}

std::string usage() {
  std::string out =
      "usage: tricorn [OPTIONS] APP\n\n"
      "APP is a shared object with an optional symbol: ./libhello.so or ./libshop.so:app\n\n"
      "options:\n"
      "  -c, --config FILE        read settings from a YAML file\n"
      "      --check-config       validate the configuration and the app, then exit\n"
      "      --settings-reference print every setting as markdown (docs/configuration.md)\n"
      "  -v, --version            print the version and exit\n"
      "  -h, --help               print this help and exit\n"
      "\n       tricorn status|reload|stop [--control-socket PATH | -c FILE]\n"
      "                           ask a running master (see control_socket)\n\n";
  for (const auto& s : kSettings) {
    if (s.long_flag.empty()) continue;
    std::string flag = s.short_flag ? fmt::format("-{}, --{}", s.short_flag, s.long_flag)
                                    : fmt::format("    --{}", s.long_flag);
    out += fmt::format("  {:<32} {}{}\n", flag, s.help,
                       s.default_value.empty() ? "" : fmt::format(" [{}]", s.default_value));
  }
  return out;
}

std::string reference_markdown() {
  std::string out =
      "# Configuration reference\n\n"
      "Generated from the settings table in `config/config.cpp` by `tricorn "
      "--settings-reference`; a unit test fails when this file and the table differ.\n\n"
      "Every setting can be given in the YAML file (`-c FILE`) by its key and on the command "
      "line by its flag; precedence, lowest first: defaults, the YAML file, the environment, "
      "flags. On a HUP the YAML file is read again and the flags and environment of the "
      "master's start apply over it.\n\n"
      "| key | flag | env | default | what HUP does |\n| --- | --- | --- | --- | --- |\n";
  for (const auto& s : kSettings) {
    std::string flag = s.long_flag.empty() ? "(positional)" : fmt::format("`--{}`", s.long_flag);
    if (s.short_flag) flag = fmt::format("`-{}`, {}", s.short_flag, flag);
    out += fmt::format("| `{}` | {} | {} | {} | {} |\n", s.key, flag,
                       s.env.empty() ? "" : fmt::format("`{}`", s.env),
                       s.default_value.empty() ? "" : fmt::format("`{}`", s.default_value),
                       s.on_reload);
  }
  out += "\n";
  for (const auto& s : kSettings) out += fmt::format("### `{}`\n\n{}\n\n", s.key, s.help);
  return out;
}

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    case LogLevel::critical: return "critical";
  }
  return "?";
}

}  // namespace tricorn::config
