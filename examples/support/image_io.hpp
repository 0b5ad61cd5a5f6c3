// SPDX-License-Identifier: MIT
// Example support: image files through stb (Debian's libstb-dev, which ships
// the headers and the compiled implementation, libstb). Reading takes what
// stb_image decodes (PNG, JPEG, binary PNM, BMP, TGA, ...) and converts it to
// 8-bit RGB; writing gives PNG or JPEG (stb_image_write). The examples'
// CMakeLists.txt builds the programs that include this file only when libstb
// is found, and links them against it (no STB_*_IMPLEMENTATION here).
#pragma once

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace image_io {

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // row-major, 3 bytes a pixel
};

/// Reads any image stb_image decodes, as 8-bit RGB (grey is replicated, alpha dropped).
inline Image read_image(const std::string& path) {
  int w = 0, h = 0, channels = 0;
  stbi_uc* data = stbi_load(path.c_str(), &w, &h, &channels, 3);
  if (data == nullptr) {
    const char* why = stbi_failure_reason();
    throw std::runtime_error("read_image: cannot read " + path + ": " + (why ? why : "unknown error"));
  }
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.assign(data, data + static_cast<size_t>(w) * h * 3);
  stbi_image_free(data);
  return im;
}

namespace detail {
inline void check_size(const char* who, const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb) {
  if (w <= 0 || h <= 0 || rgb.size() != static_cast<size_t>(w) * h * 3)
    throw std::runtime_error(std::string(who) + ": bad size for " + path);
}
}  // namespace detail

/// Writes 8-bit RGB as PNG.
inline void write_png(const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb) {
  detail::check_size("write_png", path, w, h, rgb);
  if (!stbi_write_png(path.c_str(), w, h, 3, rgb.data(), w * 3)) throw std::runtime_error("write_png: cannot write " + path);
}

/// Writes 8-bit RGB as JPEG (quality 1..100).
inline void write_jpg(const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb, int quality = 90) {
  detail::check_size("write_jpg", path, w, h, rgb);
  if (!stbi_write_jpg(path.c_str(), w, h, 3, rgb.data(), quality)) throw std::runtime_error("write_jpg: cannot write " + path);
}

/// Writes JPEG when the name ends in .jpg or .jpeg (any case), PNG otherwise.
inline void write_image(const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb) {
  std::string ext = path.substr(std::min(path.size(), path.rfind('.')));
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".jpg" || ext == ".jpeg")
    write_jpg(path, w, h, rgb);
  else
    write_png(path, w, h, rgb);
}

}  // namespace image_io
