// Loads an application shared object and checks that it was built for this server.
#pragma once

#include <tricorn/app.hpp>

#include <stdexcept>
#include <string>

namespace tricorn {

struct AppLoadError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// dlopen()s `path` (relative paths are taken from the working directory, as Gunicorn
// takes modules from it) and returns the AppEntry exported as `symbol`. The library
// stays loaded for the life of the process. Throws AppLoadError with the reason.
const AppEntry& load_app(const std::string& path, const std::string& symbol);

}  // namespace tricorn
