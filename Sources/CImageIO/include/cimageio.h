// Decoding PNG and JPEG files held in memory through libpng and libjpeg-turbo, with every library error turned
// into a return code and a message (never an abort, never a message on stderr).
//
// libpng and libjpeg report a fatal error by calling an error function that must not return; the default ones print
// and exit (libjpeg) or abort (libpng without a jump buffer). Here each decode sets a jump point with setjmp, the
// error function copies the library's message and longjmps back to it, and the function returns non-zero with the
// message in `err`. libjpeg's warnings (corrupt data, a stream that ends early: libjpeg would fill the rest with
// gray) are errors too: a damaged file is refused, never half-read.
//
// The caller owns the output: it asks for the size with cio_read_info, then passes a buffer of
// height * width * channels samples (1 byte each, or 2 bytes in native order when depth is 16).
#ifndef CIMAGEIO_H
#define CIMAGEIO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CIO_FORMAT_UNKNOWN = 0, CIO_FORMAT_PNG = 1, CIO_FORMAT_JPEG = 2 };

/// What decoding will produce: channels 1 (gray; a gray+alpha PNG loses its alpha) or 3 (RGB; palette PNGs are
/// expanded, alpha is dropped, as Pillow's convert("RGB") does); depth 8 or 16 (16-bit PNGs only).
typedef struct {
    int format;
    size_t width, height, channels, depth;
} cio_info;

/// The format from the first bytes: CIO_FORMAT_PNG, CIO_FORMAT_JPEG or CIO_FORMAT_UNKNOWN.
int cio_sniff(const unsigned char *data, size_t size);

/// Reads the header of a PNG or JPEG. Returns 0, or non-zero with a message in err (err_size bytes, terminated).
/// Images of more than max_pixels pixels are refused before anything is decoded.
int cio_read_info(cio_info *info, char *err, size_t err_size, const unsigned char *data, size_t size,
                  size_t max_pixels);

/// Decodes the image into out (out_size bytes, which must be height * width * channels * depth/8 as
/// cio_read_info gave). Returns 0, or non-zero with a message in err.
int cio_decode(unsigned char *out, size_t out_size, char *err, size_t err_size, const unsigned char *data, size_t size,
               size_t max_pixels);

#ifdef __cplusplus
}
#endif

#endif
