// Declaration-only stand-in for <fmt/format.h>, for the Debian LAMMPS
// 20220106 headers (which include fmt but the package ships none).
//
// The LAMMPS headers only *name* fmt::string_view, fmt::format_args and
// fmt::make_args_checked inside templates (Error::all<...>, utils::logmesg<...>)
// and in the private Error::_all(...) declarations. pair_ocp only calls the
// non-template std::string overloads, so nothing here is ever instantiated or
// linked; instantiating a formatting template is a compile-time error below,
// which catches an accidental error->all(FLERR, "literal") (a literal would
// pick the template overload; pass std::string instead).
#pragma once

#include <string_view>

namespace fmt {

using string_view = std::string_view;

struct format_args {};

template <typename... Args, typename S>
format_args make_args_checked(const S&, const Args&...) {
  static_assert(sizeof(S) == 0,
                "fmt shim: LAMMPS formatting templates are unavailable; pass std::string");
  return {};
}

}  // namespace fmt
