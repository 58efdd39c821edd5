// Parsing and validation of an artifact's metadata.json (no torch here).
#include <sstream>

#include "json.hpp"
#include "ocp_deploy/model.hpp"

namespace ocp_deploy {
namespace {

const json::Value& require(const json::Value& root, const std::string& key) {
  const json::Value* value = root.find(key);
  if (value == nullptr) throw Error("metadata.json lacks the required key \"" + key + "\"");
  return *value;
}

std::string require_string(const json::Value& root, const std::string& key) {
  const json::Value& value = require(root, key);
  if (!value.is_string()) throw Error("metadata.json key \"" + key + "\" must be a string");
  return value.string;
}

double require_number(const json::Value& root, const std::string& key) {
  const json::Value& value = require(root, key);
  if (!value.is_number()) throw Error("metadata.json key \"" + key + "\" must be a number");
  return value.number;
}

std::string optional_string(const json::Value& root, const std::string& key) {
  const json::Value* value = root.find(key);
  return (value != nullptr && value->is_string()) ? value->string : std::string("?");
}

}  // namespace

Metadata parse_metadata(const std::string& json_text) {
  if (json_text.empty()) {
    throw Error(std::string("artifact has no ") + kMetadataFile +
                " extra file: not an ocp-deploy TorchScript artifact");
  }
  json::Value root;
  try {
    root = json::parse(json_text);
  } catch (const std::exception& e) {
    throw Error(std::string(kMetadataFile) + " is not valid JSON (" + e.what() + ")");
  }
  if (root.type != json::Value::Type::Object) throw Error("metadata.json is not a JSON object");

  Metadata meta;
  meta.json = json_text;
  meta.format = require_string(root, "format");
  if (meta.format != kFormatName) {
    throw Error("artifact format is \"" + meta.format + "\", expected \"" + kFormatName + "\"");
  }
  double version = require_number(root, "format_version");
  meta.format_version = static_cast<int>(version);
  if (version != static_cast<double>(kFormatVersion)) {
    std::ostringstream message;
    message << "artifact format_version is " << version << ", this host supports only "
            << kFormatVersion << " (re-export the checkpoint with a matching exporter)";
    throw Error(message.str());
  }
  meta.model_kind = require_string(root, "model_kind");
  meta.cutoff = require_number(root, "cutoff");
  if (!(meta.cutoff > 0.0)) throw Error("metadata.json cutoff must be positive");
  meta.max_neighbors = static_cast<long>(require_number(root, "max_neighbors"));
  meta.forces = require_string(root, "forces");
  if (meta.forces != "direct" && meta.forces != "gradient" && meta.forces != "conservative")
    throw Error("metadata.json forces is \"" + meta.forces + "\", expected direct|gradient|conservative");
  meta.dtype = require_string(root, "dtype");
  if (meta.dtype != "float32" && meta.dtype != "float64")
    throw Error("metadata.json dtype is \"" + meta.dtype + "\", expected float32|float64");
  meta.min_atomic_number = static_cast<int>(require_number(root, "min_atomic_number"));
  meta.max_atomic_number = static_cast<int>(require_number(root, "max_atomic_number"));
  if (meta.min_atomic_number < 1 || meta.max_atomic_number < meta.min_atomic_number)
    throw Error("metadata.json atomic number range is invalid");
  // String lists: "outputs" (every artifact), "inputs" (program inputs).
  const std::pair<const char*, std::vector<std::string>*> lists[] = {{"outputs", &meta.outputs},
                                                                     {"inputs", &meta.inputs}};
  for (const auto& [key, target] : lists) {
    const json::Value* list = root.find(key);
    if (list == nullptr || list->type != json::Value::Type::Array) continue;
    for (const auto& item : list->array)
      if (item.is_string()) target->push_back(item.string);
  }
  if (const json::Value* device = root.find("compiled_for"); device != nullptr && device->is_string())
    meta.compiled_for = device->string;
  if (const json::Value* units = root.find("units"); units != nullptr) {
    // The hosts assume eV / Angstrom; refuse anything else.
    const std::pair<const char*, const char*> expected[] = {
        {"energy", "eV"}, {"length", "Angstrom"}, {"forces", "eV/Angstrom"}};
    for (const auto& [key, unit] : expected) {
      const json::Value* value = units->find(key);
      if (value != nullptr && value->is_string() && value->string != unit)
        throw Error("metadata.json units." + std::string(key) + " is \"" + value->string +
                    "\", this host needs \"" + unit + "\"");
    }
  }
  if (const json::Value* domain = root.find("domain"); domain != nullptr && domain->type == json::Value::Type::Object) {
    // Domain-decomposition programs of a package (export-model --format aoti --domain).
    const json::Value* programs = domain->find("programs");
    const json::Value* layout = domain->find("layout");
    const json::Value* convention = domain->find("force_convention");
    if (programs == nullptr || programs->type != json::Value::Type::Array || layout == nullptr ||
        layout->type != json::Value::Type::Array || convention == nullptr ||
        convention->type != json::Value::Type::Array)
      throw Error("metadata.json \"domain\" must hold \"programs\", \"layout\" and \"force_convention\" lists");
    for (const auto& item : programs->array)
      if (item.is_string()) meta.domain_programs.push_back(item.string);
    for (const auto& item : layout->array)
      if (item.is_number()) meta.domain_layout.push_back(static_cast<long>(item.number));
    for (const auto& item : convention->array)
      if (item.is_number()) meta.domain_force_convention.push_back(item.number);
  }
  meta.exporter_version = optional_string(root, "exporter_version");
  meta.torch_version = optional_string(root, "torch_version");
  meta.checkpoint_sha256 = optional_string(root, "checkpoint_sha256");
  return meta;
}

std::string Metadata::summary() const {
  std::ostringstream out;
  out << "  format            " << format << " v" << format_version << "\n"
      << "  model_kind        " << model_kind << "\n"
      << "  cutoff            " << cutoff << " Angstrom\n"
      << "  max_neighbors     " << max_neighbors << "\n"
      << "  forces            " << forces << "\n"
      << "  outputs           ";
  for (std::size_t k = 0; k < outputs.size(); ++k) out << (k ? ", " : "") << outputs[k];
  out << "\n"
      << "  dtype             " << dtype << "\n"
      << "  atomic numbers    " << min_atomic_number << ".." << max_atomic_number << "\n"
      << "  exporter_version  " << exporter_version << "\n"
      << "  torch_version     " << torch_version << "\n"
      << "  checkpoint_sha256 " << checkpoint_sha256;
  return out.str();
}

}  // namespace ocp_deploy
