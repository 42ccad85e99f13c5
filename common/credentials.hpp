// Users and groups by name or numeric id, as the `user`, `group` and
// `unix_socket_owner` settings name them.
#pragma once

#include <sys/types.h>

#include <string_view>

namespace tricorn {

struct Credentials {
  uid_t uid;
  gid_t gid;
};

// `user` and `group` are names or ids; an empty one keeps the process's own, and a user
// without a group brings its primary group. Throws std::runtime_error ("no such user: x").
Credentials resolve_credentials(std::string_view user, std::string_view group);

}  // namespace tricorn
