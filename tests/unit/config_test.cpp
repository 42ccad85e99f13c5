#include "config/config.hpp"

#include <doctest/doctest.h>

#include <unistd.h>
#include <cstdio>
#include <fstream>
#include <sstream>

using namespace tricorn::config;

namespace {

Invocation load_args(std::vector<std::string> args, std::vector<std::string> env = {}) {
  return load(args, env);
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char name[] = "/tmp/tricorn-config-XXXXXX";
    int fd = mkstemp(name);
    ::close(fd);
    path = name;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

}  // namespace

TEST_CASE("defaults follow Gunicorn") {
  auto c = load_args({"./app.so"}).config;
  CHECK(c.workers == 1);
  CHECK(c.timeout == 30);
  CHECK(c.graceful_timeout == 30);
  CHECK(c.keepalive == 2);
  CHECK(c.backlog == 2048);
  CHECK(c.limit_request_line == 4094);
  CHECK(c.limit_request_fields == 100);
  CHECK(c.limit_request_field_size == 8190);
  CHECK(c.bind == std::vector<std::string>{"127.0.0.1:8000"});
  CHECK(c.app_path() == "./app.so");
  CHECK(c.app_symbol() == "app");
}

TEST_CASE("precedence: defaults < YAML < environment < flags") {
  TempFile f(
      "workers: 3\nbind: ['127.0.0.1:9001', 'unix:/tmp/x.sock']\ntimeout: 5\nkeepalive: 7\n");
  auto c = load_args({"-c", f.path, "./app.so:main"}).config;
  CHECK(c.workers == 3);
  CHECK(c.bind == std::vector<std::string>{"127.0.0.1:9001", "unix:/tmp/x.sock"});
  CHECK(c.app_symbol() == "main");

  c = load_args({"-c", f.path, "./app.so"}, {"WEB_CONCURRENCY=5"}).config;
  CHECK(c.workers == 5);

  c = load_args({"-c", f.path, "-w", "2", "--timeout=9", "--bind", "0.0.0.0:1", "-b", "[::1]:2",
                 "./app.so"},
                {"WEB_CONCURRENCY=5"})
          .config;
  CHECK(c.workers == 2);
  CHECK(c.timeout == 9);
  CHECK(c.keepalive == 7);
  CHECK(c.bind == std::vector<std::string>{"0.0.0.0:1", "[::1]:2"});
}

TEST_CASE("Gunicorn's flag spellings") {
  auto c = load_args({"--limit-request-field_size", "100", "--keep-alive", "4", "--preload",
                      "--max-requests", "10", "--max-requests-jitter", "3", "--log-level", "debug",
                      "--access-logfile", "-", "./a.so"})
               .config;
  CHECK(c.limit_request_field_size == 100);
  CHECK(c.keepalive == 4);
  CHECK(c.preload_app);
  CHECK(c.max_requests == 10);
  CHECK(c.max_requests_jitter == 3);
  CHECK(c.loglevel == LogLevel::debug);
  CHECK(c.accesslog == "-");
}

TEST_CASE("YAML errors name the file, the line and the key") {
  TempFile unknown("workers: 2\n\nworkres: 3\n");
  CHECK(error_of([&] {
          load_args({"-c", unknown.path, "./a.so"});
        }) == unknown.path + ":3: key 'workres': unknown setting");

  TempFile bad_type("bind: 127.0.0.1:1\ntimeout: soon\n");
  CHECK(error_of([&] {
          load_args({"-c", bad_type.path, "./a.so"});
        }) == bad_type.path + ":2: key 'timeout': expected a number of seconds, got 'soon'");

  TempFile bad_int("workers: 2.5\n");
  CHECK(error_of([&] {
          load_args({"-c", bad_int.path, "./a.so"});
        }) == bad_int.path + ":1: key 'workers': expected an integer, got '2.5'");

  TempFile syntax("workers: [1\n");
  CHECK(error_of([&] { load_args({"-c", syntax.path, "./a.so"}); }).starts_with(syntax.path + ":"));

  CHECK(error_of([&] {
          load_args({"-c", "/nonexistent.yaml", "./a.so"});
        }) == "/nonexistent.yaml: cannot read the file");
}

TEST_CASE("flag and validation errors") {
  CHECK(error_of([] {
          load_args({"--workers", "x", "./a.so"});
        }) == "--workers: key 'workers': expected an integer, got 'x'");
  CHECK(error_of([] {
          load_args({"--no-such-flag", "./a.so"});
        }) == "--no-such-flag: unknown option (see --help)");
  CHECK(error_of([] { load_args({"-w", "0", "./a.so"}); }) == "key 'workers': must be at least 1");
  CHECK(error_of([] { load_args({}); }) ==
        "key 'app': no application given (tricorn [options] PATH.so[:SYMBOL])");
  CHECK(error_of([] { load_args({"./a.so"}, {"WEB_CONCURRENCY=many"}); }) ==
        "WEB_CONCURRENCY: key 'workers': expected an integer, got 'many'");
}

TEST_CASE("the app can come from YAML; the command line wins") {
  TempFile f("app: ./from-yaml.so:x\n");
  CHECK(load_args({"-c", f.path}).config.app == "./from-yaml.so:x");
  CHECK(load_args({"-c", f.path, "./cli.so"}).config.app == "./cli.so");
}

TEST_CASE("docs/configuration.md is the settings table, as generated") {
  std::ifstream in(std::string(TRICORN_TEST_DATA) + "/../../docs/configuration.md");
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  // Regenerate with: ./build/tricorn --settings-reference > docs/configuration.md
  CHECK(text.str() == tricorn::config::reference_markdown());
}
