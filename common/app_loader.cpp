#include "common/app_loader.hpp"

#include <dlfcn.h>

#include <fmt/format.h>

namespace tricorn {

const AppEntry& load_app(const std::string& path, const std::string& symbol) {
  // dlopen searches the library path for names without a slash; an app named on the
  // command line is a file, so make it one.
  std::string file = path.find('/') == std::string::npos ? "./" + path : path;
  void* handle = ::dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) throw AppLoadError(fmt::format("cannot load app {}: {}", path, ::dlerror()));
  auto* entry = static_cast<const AppEntry*>(::dlsym(handle, symbol.c_str()));
  if (!entry)
    throw AppLoadError(
        fmt::format("app {} has no symbol '{}' (export one with TRICORN_APP({}, your_function))",
                    path, symbol, symbol));
  if (entry->abi_version != kAbiVersion)
    throw AppLoadError(fmt::format(
        "app {}:{} was built for app interface {} with Boost {} and a frame cache of {}; this "
        "server has interface {} with Boost {} and a frame cache of {}: rebuild the app against "
        "this server's headers, including <tricorn/app.hpp> before any Boost.Asio header",
        path, symbol, entry->abi_version >> 32, entry->abi_version & 0xffffff,
        (entry->abi_version >> 24) & 0xff, kInterfaceVersion, BOOST_VERSION, kFrameCacheSize));
  if (!entry->call && !entry->sync_call)
    throw AppLoadError(fmt::format("app {}:{} has no function", path, symbol));
  return *entry;
}

}  // namespace tricorn
