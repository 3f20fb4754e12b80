// PNG and JPEG decoding with errors as return codes: see include/cimageio.h.
//
// Both decoders follow the libraries' documented pattern for recoverable errors (libpng: png_jmpbuf and an error
// function that does not return; libjpeg: a jpeg_error_mgr whose error_exit longjmps, as in libjpeg's example.c).
// Only the library structs live across the setjmp, and they are only read back through their address
// (png_destroy_read_struct, jpeg_destroy_decompress), so no local is left indeterminate by the jump.
#include "cimageio.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

static void cio_set_error(char *err, size_t err_size, const char *msg) {
    if (err && err_size > 0) snprintf(err, err_size, "%s", msg);
}

int cio_sniff(const unsigned char *data, size_t size) {
    static const unsigned char png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size >= 8 && memcmp(data, png_magic, 8) == 0) return CIO_FORMAT_PNG;
    if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return CIO_FORMAT_JPEG;
    return CIO_FORMAT_UNKNOWN;
}

// ---- PNG ---------------------------------------------------------------------------------------------------

typedef struct {
    const unsigned char *data;
    size_t size, pos;
    char *err;
    size_t err_size;
} cio_png_source;

static void cio_png_error(png_structp png, png_const_charp msg) {
    cio_png_source *src = (cio_png_source *)png_get_error_ptr(png);
    cio_set_error(src->err, src->err_size, msg);
    png_longjmp(png, 1);
}

// Warnings (a bad ancillary chunk, an sRGB profile libpng dislikes) change nothing in the pixels: silent.
static void cio_png_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void cio_png_read(png_structp png, png_bytep out, size_t n) {
    cio_png_source *src = (cio_png_source *)png_get_io_ptr(png);
    if (n > src->size - src->pos) png_error(png, "the file ends early (truncated PNG)");
    memcpy(out, src->data + src->pos, n);
    src->pos += n;
}

// out NULL: header only (fills info). out: decodes into out (out_size bytes), rows top to bottom.
static int cio_png(unsigned char *out, size_t out_size, cio_info *info, char *err, size_t err_size,
                   const unsigned char *data, size_t size, size_t max_pixels) {
    cio_png_source src = {data, size, 0, err, err_size};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, cio_png_error, cio_png_warning);
    if (!png) {
        cio_set_error(err, err_size, "libpng could not start");
        return 1;
    }
    png_infop pinfo = png_create_info_struct(png);
    if (!pinfo) {
        png_destroy_read_struct(&png, NULL, NULL);
        cio_set_error(err, err_size, "libpng could not start");
        return 1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &pinfo, NULL);
        return 1;
    }
    png_set_read_fn(png, &src, cio_png_read);
    png_set_user_limits(png, 1u << 24, 1u << 24);  // the pixel count is checked below
    png_set_chunk_malloc_max(png, (png_alloc_size_t)1 << 24);
    png_read_info(png, pinfo);
    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0;
    png_get_IHDR(png, pinfo, &width, &height, &bit_depth, &color_type, NULL, NULL, NULL);
    if ((size_t)width * (size_t)height > max_pixels) {
        char msg[160];
        snprintf(msg, sizeof msg, "the image is %ux%u, more than the %zu pixels allowed", (unsigned)width,
                 (unsigned)height, max_pixels);
        png_error(png, msg);
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (bit_depth == 16) {
        const unsigned short one = 1;
        if (*(const unsigned char *)&one == 1) png_set_swap(png);  // PNG is big-endian; out holds native order
    }
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);
    size_t channels = png_get_channels(png, pinfo), depth = png_get_bit_depth(png, pinfo);
    size_t rowbytes = png_get_rowbytes(png, pinfo);
    if (!(channels == 1 || channels == 3) || !(depth == 8 || depth == 16) || rowbytes != width * channels * (depth / 8)) {
        png_error(png, "unexpected pixel layout after conversion");
    }
    info->format = CIO_FORMAT_PNG;
    info->width = width;
    info->height = height;
    info->channels = channels;
    info->depth = depth;
    if (out) {
        if (out_size != rowbytes * height) png_error(png, "the output buffer does not match the image size");
        for (int pass = 0; pass < passes; pass++) {
            for (size_t y = 0; y < height; y++) png_read_row(png, out + y * rowbytes, NULL);
        }
        png_read_end(png, NULL);  // the chunks after the image data, up to IEND, CRCs checked
    }
    png_destroy_read_struct(&png, &pinfo, NULL);
    return 0;
}

// ---- JPEG --------------------------------------------------------------------------------------------------

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err;
    size_t err_size;
} cio_jpeg_error;

static void cio_jpeg_error_exit(j_common_ptr cinfo) {
    cio_jpeg_error *e = (cio_jpeg_error *)cinfo->err;
    char msg[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, msg);
    cio_set_error(e->err, e->err_size, msg);
    longjmp(e->jump, 1);
}

// Level -1 is a warning: corrupt data or a stream that ends early, which libjpeg would paper over with gray.
// Those are errors here. Warnings about metadata alone (an unknown JFIF revision, an odd Adobe marker or ICC
// chunk) leave the pixels alone and are let through. Levels >= 0 are trace messages: silent.
static void cio_jpeg_emit(j_common_ptr cinfo, int level) {
    if (level >= 0) return;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM || code == JWRN_BOGUS_ICC) return;
    cio_jpeg_error_exit(cinfo);
}

static int cio_jpeg(unsigned char *out, size_t out_size, cio_info *info, char *err, size_t err_size,
                    const unsigned char *data, size_t size, size_t max_pixels) {
    struct jpeg_decompress_struct cinfo;
    cio_jpeg_error jerr;
    memset(&cinfo, 0, sizeof cinfo);  // jpeg_destroy_decompress on a struct never created is then a no-op
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = cio_jpeg_error_exit;
    jerr.pub.emit_message = cio_jpeg_emit;
    jerr.err = err;
    jerr.err_size = err_size;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if ((size_t)cinfo.image_width * (size_t)cinfo.image_height > max_pixels) {
        snprintf(err, err_size, "the image is %ux%u, more than the %zu pixels allowed", (unsigned)cinfo.image_width,
                 (unsigned)cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        cio_set_error(err, err_size, "a CMYK JPEG; AdvKit reads grayscale and RGB JPEGs (convert it to RGB first)");
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    cinfo.out_color_space = cinfo.jpeg_color_space == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_calc_output_dimensions(&cinfo);
    size_t width = cinfo.output_width, height = cinfo.output_height, channels = (size_t)cinfo.output_components;
    if (!(channels == 1 || channels == 3)) {
        cio_set_error(err, err_size, "unexpected number of color components after conversion");
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    info->format = CIO_FORMAT_JPEG;
    info->width = width;
    info->height = height;
    info->channels = channels;
    info->depth = 8;
    if (out) {
        size_t rowbytes = width * channels;
        if (out_size != rowbytes * height) {
            cio_set_error(err, err_size, "the output buffer does not match the image size");
            jpeg_destroy_decompress(&cinfo);
            return 1;
        }
        jpeg_start_decompress(&cinfo);
        while (cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = out + (size_t)cinfo.output_scanline * rowbytes;
            if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) ERREXIT(&cinfo, JERR_INPUT_EOF);
        }
        jpeg_finish_decompress(&cinfo);
    }
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

// ---- Entry points ------------------------------------------------------------------------------------------

static int cio_dispatch(unsigned char *out, size_t out_size, cio_info *info, char *err, size_t err_size,
                        const unsigned char *data, size_t size, size_t max_pixels) {
    cio_info scratch;
    if (!info) info = &scratch;
    memset(info, 0, sizeof *info);
    switch (cio_sniff(data, size)) {
    case CIO_FORMAT_PNG: return cio_png(out, out_size, info, err, err_size, data, size, max_pixels);
    case CIO_FORMAT_JPEG: return cio_jpeg(out, out_size, info, err, err_size, data, size, max_pixels);
    default: cio_set_error(err, err_size, "not a PNG or JPEG file"); return 1;
    }
}

int cio_read_info(cio_info *info, char *err, size_t err_size, const unsigned char *data, size_t size,
                  size_t max_pixels) {
    return cio_dispatch(NULL, 0, info, err, err_size, data, size, max_pixels);
}

int cio_decode(unsigned char *out, size_t out_size, char *err, size_t err_size, const unsigned char *data, size_t size,
               size_t max_pixels) {
    if (!out) {
        cio_set_error(err, err_size, "no output buffer");
        return 1;
    }
    return cio_dispatch(out, out_size, NULL, err, err_size, data, size, max_pixels);
}
