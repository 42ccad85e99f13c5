#include "common/credentials.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <string>

namespace tricorn {
namespace {

bool is_number(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

Credentials resolve_credentials(std::string_view user, std::string_view group) {
  Credentials c{::getuid(), ::getgid()};
  if (!user.empty()) {
    const std::string name(user);
    if (const passwd* pw = ::getpwnam(name.c_str())) {
      c.uid = pw->pw_uid;
      if (group.empty()) c.gid = pw->pw_gid;
    } else if (is_number(user)) {
      c.uid = static_cast<uid_t>(std::stoul(name));
    } else {
      throw std::runtime_error("no such user: " + name);
    }
  }
  if (!group.empty()) {
    const std::string name(group);
    if (const struct group* gr = ::getgrnam(name.c_str()))
      c.gid = gr->gr_gid;
    else if (is_number(group))
      c.gid = static_cast<gid_t>(std::stoul(name));
    else
      throw std::runtime_error("no such group: " + name);
  }
  return c;
}

}  // namespace tricorn
