#include "ocp_deploy/extxyz.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "ocp_deploy/elements.hpp"

namespace ocp_deploy {
namespace {

// Digits written for positions / forces (float64 round-trips with 17; 10
// keeps float32 parity far below test tolerances while staying readable).
constexpr int kCoordinateDigits = 10;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

[[noreturn]] void fail(const std::string& path, std::size_t line, const std::string& what) {
  throw Error(path + ":" + std::to_string(line) + ": " + what);
}

// key=value pairs of the comment line; keys lower-cased.
std::map<std::string, std::string> parse_comment(const std::string& text, const std::string& path) {
  std::map<std::string, std::string> pairs;
  std::size_t pos = 0;
  const std::size_t size = text.size();
  while (pos < size) {
    while (pos < size && std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
    if (pos >= size) break;
    std::size_t key_begin = pos;
    while (pos < size && text[pos] != '=' && !std::isspace(static_cast<unsigned char>(text[pos])))
      ++pos;
    std::string key = lower(text.substr(key_begin, pos - key_begin));
    std::string value = "T";  // a bare key is a true flag
    if (pos < size && text[pos] == '=') {
      ++pos;
      if (pos < size && (text[pos] == '"' || text[pos] == '\'')) {
        const char quote = text[pos++];
        std::size_t end = text.find(quote, pos);
        if (end == std::string::npos) fail(path, 2, "unterminated quote in comment line");
        value = text.substr(pos, end - pos);
        pos = end + 1;
      } else {
        std::size_t value_begin = pos;
        while (pos < size && !std::isspace(static_cast<unsigned char>(text[pos]))) ++pos;
        value = text.substr(value_begin, pos - value_begin);
      }
    }
    pairs[key] = value;
  }
  return pairs;
}

double to_double(const std::string& token, const std::string& path, std::size_t line) {
  std::size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(token, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != token.size() || token.empty()) fail(path, line, "'" + token + "' is not a number");
  return value;
}

long long to_integer(const std::string& token, const std::string& path, std::size_t line) {
  std::size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(token, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != token.size() || token.empty()) fail(path, line, "'" + token + "' is not an integer");
  return value;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream stream(text);
  while (std::getline(stream, part, separator)) parts.push_back(part);
  return parts;
}

std::vector<std::string> words(const std::string& text) {
  std::vector<std::string> parts;
  std::istringstream stream(text);
  std::string word;
  while (stream >> word) parts.push_back(word);
  return parts;
}

struct Column {
  std::string name;
  char type;
  int count;
  int first;  // first token index on an atom line
};

}  // namespace

XyzStructure read_extxyz(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open structure file '" + path + "'");
  std::string line;
  if (!std::getline(in, line)) fail(path, 1, "empty file");
  const auto count_words = words(line);
  if (count_words.size() != 1) fail(path, 1, "expected the number of atoms");
  const long long count = to_integer(count_words[0], path, 1);
  if (count <= 0) fail(path, 1, "number of atoms must be positive");
  const auto n = static_cast<std::size_t>(count);
  if (!std::getline(in, line)) fail(path, 2, "missing comment line");
  auto info = parse_comment(line, path);

  XyzStructure result;
  Frame& frame = result.frame;
  bool has_lattice = false;
  if (auto it = info.find("lattice"); it != info.end()) {
    auto values = words(it->second);
    if (values.size() != 9) fail(path, 2, "Lattice needs 9 numbers");
    for (int k = 0; k < 9; ++k) frame.cell[k] = to_double(values[k], path, 2);
    has_lattice = true;
  }
  frame.pbc = {has_lattice, has_lattice, has_lattice};
  if (auto it = info.find("pbc"); it != info.end()) {
    auto values = words(it->second);
    if (values.size() != 3) fail(path, 2, "pbc needs 3 flags");
    for (int k = 0; k < 3; ++k) {
      std::string flag = lower(values[k]);
      if (flag == "t" || flag == "true" || flag == "1") frame.pbc[k] = true;
      else if (flag == "f" || flag == "false" || flag == "0") frame.pbc[k] = false;
      else fail(path, 2, "bad pbc flag '" + values[k] + "'");
    }
  }
  if ((frame.pbc[0] || frame.pbc[1] || frame.pbc[2]) && !has_lattice)
    fail(path, 2, "periodic structure without a Lattice");

  std::string properties = "species:S:1:pos:R:3";
  if (auto it = info.find("properties"); it != info.end()) properties = it->second;
  auto fields = split(properties, ':');
  if (fields.size() % 3 != 0) fail(path, 2, "Properties must be name:type:count triplets");
  std::vector<Column> columns;
  int total = 0;
  for (std::size_t k = 0; k < fields.size(); k += 3) {
    Column column{fields[k], fields[k + 1].empty() ? '?' : fields[k + 1][0],
                  static_cast<int>(to_integer(fields[k + 2], path, 2)), total};
    if (column.count <= 0) fail(path, 2, "bad column count in Properties");
    total += column.count;
    columns.push_back(column);
  }
  auto find_column = [&](const std::string& name) -> const Column* {
    for (const auto& column : columns)
      if (column.name == name) return &column;
    return nullptr;
  };
  const Column* species = find_column("species");
  const Column* numbers = find_column("Z") ? find_column("Z") : find_column("numbers");
  const Column* pos = find_column("pos");
  const Column* tags = find_column("tags");
  const Column* masses = find_column("masses");
  if (pos == nullptr || pos->count != 3 || pos->type != 'R') fail(path, 2, "Properties lacks pos:R:3");
  if (species == nullptr && numbers == nullptr) fail(path, 2, "Properties lacks species or Z");

  frame.positions.resize(3 * n);
  frame.atomic_numbers.resize(n);
  frame.tags.assign(n, 0);
  result.symbols.resize(n);
  result.masses.resize(n);
  for (std::size_t a = 0; a < n; ++a) {
    const std::size_t line_number = a + 3;
    if (!std::getline(in, line))
      fail(path, line_number, "file ends after " + std::to_string(a) + " of " +
                                  std::to_string(n) + " atoms");
    auto tokens = words(line);
    if (static_cast<int>(tokens.size()) != total)
      fail(path, line_number, "expected " + std::to_string(total) + " columns, found " +
                                  std::to_string(tokens.size()));
    int z = 0;
    if (species != nullptr) {
      z = atomic_number(tokens[species->first]);
      if (z == 0) fail(path, line_number, "unknown element '" + tokens[species->first] + "'");
    } else {
      z = static_cast<int>(to_integer(tokens[numbers->first], path, line_number));
      if (z < 1 || z > max_known_atomic_number())
        fail(path, line_number, "bad atomic number " + tokens[numbers->first]);
    }
    frame.atomic_numbers[a] = z;
    result.symbols[a] = element_symbol(z);
    for (int d = 0; d < 3; ++d)
      frame.positions[3 * a + d] = to_double(tokens[pos->first + d], path, line_number);
    if (tags != nullptr) frame.tags[a] = to_integer(tokens[tags->first], path, line_number);
    result.masses[a] = masses != nullptr ? to_double(tokens[masses->first], path, line_number)
                                         : atomic_mass(z);
    if (!(result.masses[a] > 0.0)) fail(path, line_number, "atom has no positive mass");
  }
  return result;
}

void write_extxyz_frame(std::ostream& out, const XyzStructure& structure,
                        const std::vector<double>& forces, double energy, double time_fs) {
  const Frame& frame = structure.frame;
  const std::size_t n = frame.size();
  char buffer[256];
  out << n << "\n";
  out << "Lattice=\"";
  for (int k = 0; k < 9; ++k) {
    std::snprintf(buffer, sizeof(buffer), "%s%.*g", k ? " " : "", kCoordinateDigits + 6, frame.cell[k]);
    out << buffer;
  }
  out << "\" Properties=species:S:1:pos:R:3:tags:I:1:forces:R:3";
  std::snprintf(buffer, sizeof(buffer), " energy=%.*g time_fs=%.6g", kCoordinateDigits + 6, energy, time_fs);
  out << buffer << " pbc=\"" << (frame.pbc[0] ? "T" : "F") << " " << (frame.pbc[1] ? "T" : "F")
      << " " << (frame.pbc[2] ? "T" : "F") << "\"\n";
  for (std::size_t a = 0; a < n; ++a) {
    std::snprintf(buffer, sizeof(buffer), "%-3s %.*f %.*f %.*f %lld %.*e %.*e %.*e",
                  structure.symbols[a].c_str(), kCoordinateDigits, frame.positions[3 * a],
                  kCoordinateDigits, frame.positions[3 * a + 1], kCoordinateDigits,
                  frame.positions[3 * a + 2], static_cast<long long>(frame.tags[a]),
                  kCoordinateDigits, forces[3 * a], kCoordinateDigits, forces[3 * a + 1],
                  kCoordinateDigits, forces[3 * a + 2]);
    out << buffer << "\n";
  }
}

}  // namespace ocp_deploy
