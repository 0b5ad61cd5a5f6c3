// SPDX-License-Identifier: MIT
// Test support: reads the golden cases in tests/data/golden (see its README):
// params.json with nlohmann::json and .npy arrays (v1.0, C order, <f4, <i8, |u1).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace golden {

inline std::string dir() { return EFFATTN_GOLDEN_DIR; }

/// One .npy array, converted to double (exact for f4, i8 up to 2^53, u1).
struct Array {
  std::string dtype;  // "<f4", "<i8" or "|u1"
  std::vector<long> shape;
  std::vector<double> data;
  long size() const { return static_cast<long>(data.size()); }
  long dim(size_t i) const { return shape.at(i); }
  std::vector<float> as_float() const { return std::vector<float>(data.begin(), data.end()); }
  std::vector<std::int64_t> as_int() const {
    std::vector<std::int64_t> r(data.size());
    for (size_t i = 0; i < data.size(); ++i) r[i] = static_cast<std::int64_t>(data[i]);
    return r;
  }
};

inline Array load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("golden: cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error("golden: not an npy file: " + path);
  unsigned char ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  std::uint32_t hlen = 0;
  if (ver[0] == 1) {
    unsigned char l[2];
    f.read(reinterpret_cast<char*>(l), 2);
    hlen = l[0] | (l[1] << 8);
  } else {
    unsigned char l[4];
    f.read(reinterpret_cast<char*>(l), 4);
    hlen = l[0] | (l[1] << 8) | (l[2] << 16) | (static_cast<std::uint32_t>(l[3]) << 24);
  }
  std::string header(hlen, ' ');
  f.read(&header[0], hlen);
  Array a;
  auto p = header.find("'descr': '");
  a.dtype = header.substr(p + 10, 3);
  if (header.find("'fortran_order': False") == std::string::npos) throw std::runtime_error("golden: fortran order in " + path);
  auto s0 = header.find("'shape': (") + 10, s1 = header.find(')', s0);
  std::stringstream ss(header.substr(s0, s1 - s0));
  std::string tok;
  long n = 1;
  while (std::getline(ss, tok, ',')) {
    if (tok.find_first_not_of(' ') == std::string::npos) continue;
    a.shape.push_back(std::stol(tok));
    n *= a.shape.back();
  }
  a.data.resize(static_cast<size_t>(n));
  if (a.dtype == "<f4") {
    std::vector<float> t(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(t.data()), n * 4);
    for (long i = 0; i < n; ++i) a.data[i] = t[i];
  } else if (a.dtype == "<i8") {
    std::vector<std::int64_t> t(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(t.data()), n * 8);
    for (long i = 0; i < n; ++i) a.data[i] = static_cast<double>(t[i]);
  } else if (a.dtype == "|u1") {
    std::vector<unsigned char> t(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(t.data()), n);
    for (long i = 0; i < n; ++i) a.data[i] = t[i];
  } else {
    throw std::runtime_error("golden: unsupported dtype " + a.dtype + " in " + path);
  }
  if (!f) throw std::runtime_error("golden: truncated " + path);
  return a;
}

/// A golden case: its params.json and arrays by name (from params["files"]).
struct Case {
  std::string name;
  nlohmann::json params;
  double atol = 0, rtol = 0;
  explicit Case(const std::string& case_name) : name(case_name) {
    std::ifstream f(dir() + "/" + name + "/params.json");
    if (!f) throw std::runtime_error("golden: no case " + name);
    f >> params;
    atol = params["tolerance"].value("atol", 0.0);
    rtol = params["tolerance"].value("rtol", 0.0);
  }
  bool has(const std::string& array) const { return params["files"].contains(array); }
  Array array(const std::string& a) const {
    if (!has(a)) throw std::runtime_error("golden: case " + name + " has no array " + a);
    return load_npy(dir() + "/" + name + "/" + params["files"][a]["file"].get<std::string>());
  }
  /// Names of the arrays with the given role ("input", "intermediate", "output").
  std::vector<std::string> arrays(const std::string& role) const {
    std::vector<std::string> r;
    for (auto& [k, v] : params["files"].items())
      if (v.value("role", "") == role) r.push_back(k);
    return r;
  }
};

/// Every case whose name starts with prefix, from manifest.json.
inline std::vector<std::string> cases(const std::string& prefix) {
  std::ifstream f(dir() + "/manifest.json");
  nlohmann::json m;
  f >> m;
  std::vector<std::string> r;
  for (auto& c : m["cases"]) {
    std::string n = c.is_string() ? c.get<std::string>() : c.value("case", c.value("name", std::string()));
    if (n.rfind(prefix, 0) == 0) r.push_back(n);
  }
  return r;
}

}  // namespace golden
