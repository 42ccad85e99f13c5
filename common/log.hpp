// The error log: one line per call, written with one write(2) so lines from the master
// and its workers never interleave. Format as Gunicorn's:
//   [2026-11-24 03:32:06 +0000] [4242] [INFO] Booting worker with pid: 4242
// When stderr is the systemd journal (JOURNAL_STREAM), each line starts with its
// syslog priority (<3> for errors ...), so `journalctl -p err` works.
#pragma once

#include "config/config.hpp"

#include <fmt/format.h>

#include <string>
#include <string_view>

namespace tricorn::log {

using config::LogLevel;

// Opens `target` ("-" for stderr) and sets the threshold. Safe to call again (USR1, HUP).
void configure(const std::string& target, LogLevel level);
void reopen();
bool enabled(LogLevel level);
void write(LogLevel level, std::string_view message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(LogLevel::debug)) write(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(LogLevel::info)) write(LogLevel::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warning(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(LogLevel::warning))
    write(LogLevel::warning, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (enabled(LogLevel::error)) write(LogLevel::error, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void critical(fmt::format_string<Args...> f, Args&&... args) {
  write(LogLevel::critical, fmt::format(f, std::forward<Args>(args)...));
}

// The access log: off until configured with a non-empty target ("-" for stdout).
void configure_access(const std::string& target);
bool access_enabled();
void access(std::string_view line);  // `line` without the newline

// In a worker: lines go to a writer thread from now on, so a slow disk never blocks
// the event loop. flush() writes what is waiting and stops the thread (at exit).
void start_background_writer();
void flush();

}  // namespace tricorn::log
