// SPDX-License-Identifier: MIT
// Example support: read and write binary PPM (P6) and write PNG (8-bit RGB,
// stored deflate blocks: no compression library needed).
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace image_io {

struct Image {
  int width = 0, height = 0;
  std::vector<std::uint8_t> rgb;  // row-major, 3 bytes a pixel
};

inline Image read_ppm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("read_ppm: cannot open " + path);
  std::string magic;
  f >> magic;
  if (magic != "P6") throw std::runtime_error("read_ppm: " + path + " is not a binary PPM (P6)");
  auto next_int = [&] {
    int v;
    while (f >> std::ws && f.peek() == '#') {
      std::string line;
      std::getline(f, line);
    }
    if (!(f >> v)) throw std::runtime_error("read_ppm: bad header in " + path);
    return v;
  };
  Image im;
  im.width = next_int();
  im.height = next_int();
  const int maxval = next_int();
  if (im.width <= 0 || im.height <= 0 || im.width > 1 << 15 || im.height > 1 << 15 || maxval != 255)
    throw std::runtime_error("read_ppm: unsupported size or maxval in " + path);
  f.get();
  im.rgb.resize(static_cast<size_t>(im.width) * im.height * 3);
  f.read(reinterpret_cast<char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size()));
  if (!f) throw std::runtime_error("read_ppm: truncated " + path);
  return im;
}

inline void write_ppm(const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb) {
  if (w <= 0 || h <= 0 || rgb.size() != static_cast<size_t>(w) * h * 3) throw std::runtime_error("write_ppm: bad size");
  std::ofstream f(path, std::ios::binary);
  f << "P6\n" << w << " " << h << "\n255\n";
  f.write(reinterpret_cast<const char*>(rgb.data()), static_cast<std::streamsize>(rgb.size()));
  if (!f) throw std::runtime_error("write_ppm: cannot write " + path);
}

namespace detail {
inline std::uint32_t crc32(const std::uint8_t* p, size_t n, std::uint32_t c = 0xffffffffu) {
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c;
}
inline void put32(std::vector<std::uint8_t>& v, std::uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<std::uint8_t>(x >> s));
}
inline void chunk(std::ofstream& f, const char* type, const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> b;
  put32(b, static_cast<std::uint32_t>(data.size()));
  b.insert(b.end(), type, type + 4);
  b.insert(b.end(), data.begin(), data.end());
  put32(b, crc32(b.data() + 4, b.size() - 4) ^ 0xffffffffu);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
}  // namespace detail

/// Writes an 8-bit RGB PNG. The image data goes in stored (uncompressed)
/// deflate blocks, which every PNG reader accepts.
inline void write_png(const std::string& path, int w, int h, const std::vector<std::uint8_t>& rgb) {
  if (w <= 0 || h <= 0 || rgb.size() != static_cast<size_t>(w) * h * 3) throw std::runtime_error("write_png: bad size");
  std::vector<std::uint8_t> raw;
  raw.reserve(static_cast<size_t>(h) * (1 + 3 * w));
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), rgb.begin() + static_cast<size_t>(y) * w * 3, rgb.begin() + static_cast<size_t>(y + 1) * w * 3);
  }
  std::vector<std::uint8_t> z = {0x78, 0x01};
  std::uint32_t a = 1, b = 0;
  for (auto c : raw) {
    a = (a + c) % 65521u;
    b = (b + a) % 65521u;
  }
  for (size_t off = 0; off < raw.size() || off == 0; off += 65535) {
    const size_t n = std::min<size_t>(65535, raw.size() - off);
    const bool last = off + n >= raw.size();
    z.push_back(last ? 1 : 0);
    z.push_back(static_cast<std::uint8_t>(n & 0xff));
    z.push_back(static_cast<std::uint8_t>(n >> 8));
    z.push_back(static_cast<std::uint8_t>(~n & 0xff));
    z.push_back(static_cast<std::uint8_t>((~n >> 8) & 0xff));
    z.insert(z.end(), raw.begin() + off, raw.begin() + off + n);
    if (last) break;
  }
  detail::put32(z, (b << 16) | a);
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("write_png: cannot open " + path);
  const std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  f.write(reinterpret_cast<const char*>(sig), 8);
  std::vector<std::uint8_t> ihdr;
  detail::put32(ihdr, static_cast<std::uint32_t>(w));
  detail::put32(ihdr, static_cast<std::uint32_t>(h));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});
  detail::chunk(f, "IHDR", ihdr);
  detail::chunk(f, "IDAT", z);
  detail::chunk(f, "IEND", {});
  if (!f) throw std::runtime_error("write_png: cannot write " + path);
}

}  // namespace image_io
