# find_package(tricorn) gives tricorn::app (the app interface headers) and
# tricorn_add_app(name sources...), which builds a loadable app the way the server
# expects it: a MODULE library named lib<name>.so, C++20, hidden visibility except the
# TRICORN_APP entry.
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.81)
include("${CMAKE_CURRENT_LIST_DIR}/tricornTargets.cmake")

function(tricorn_add_app name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE tricorn::app)
  set_target_properties(${name} PROPERTIES PREFIX "lib" CXX_VISIBILITY_PRESET hidden)
endfunction()
