"""Random views of images for self-supervised training, as a Keras layer.

``RandomView`` draws, per image, a random resized crop (SimCLR's: a
fraction of the area and an aspect ratio), an optional horizontal flip,
brightness and contrast jitter, and for RGB images saturation jitter and
random grayscale. Crop and flip are one affine resampling
(``keras.ops.image.affine_transform``), so a view costs one interpolation
whatever the crop. Everything is ``keras.ops`` and ``keras.random`` with the
layer's own seeded generator: backend-agnostic and a function of the seed.
"""

import math

from ._keras import import_keras

keras = import_keras()  # this module is imported only to train or score a contrastive embedder
ops = keras.ops

# ITU-R 601 luma weights, as tf.image.rgb_to_grayscale uses
_LUMA = (0.2989, 0.587, 0.114)


def smallest_crop_side(image_shape, crop_scale, crop_ratio):
    """Side (in pixels) of the smallest crop ``RandomView`` can draw."""
    height, width = image_shape[:2]
    area = crop_scale[0] * height * width
    widest = min(width, math.sqrt(area * crop_ratio[1]))
    tallest = min(height, math.sqrt(area / crop_ratio[0]))
    return min(area / widest, area / tallest, widest, tallest)


@keras.saving.register_keras_serializable(package="sklearn_imgretrieval")
class RandomView(keras.layers.Layer):
    """One random augmented view of each image of a batch.

    Parameters
    ----------
    crop_scale : (float, float)
        Range of the crop's area as a fraction of the image's.
    crop_ratio : (float, float)
        Range of the crop's aspect ratio (width / height), drawn
        log-uniformly.
    horizontal_flip : bool
        Mirror half of the views left-right.
    brightness : float
        Add a value drawn from [-brightness, brightness] to every pixel.
    contrast : float
        Scale each image's deviations from its mean by a factor drawn from
        [1 - contrast, 1 + contrast].
    saturation : float
        RGB only: blend with the grayscale image by a factor drawn from
        [1 - saturation, 1 + saturation].
    grayscale : float
        RGB only: probability of replacing a view by its grayscale image.
    seed : int
        Seed of the layer's random generator.

    Unlike Keras's preprocessing layers, the view is drawn in inference mode
    too: the layer exists to make views, and the contrastive embedder uses it
    only in its training model and its score.
    """

    def __init__(
        self,
        crop_scale=(0.08, 1.0),
        crop_ratio=(0.75, 4 / 3),
        horizontal_flip=True,
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        grayscale=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.crop_ratio = tuple(float(v) for v in crop_ratio)
        self.horizontal_flip = bool(horizontal_flip)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.grayscale = float(grayscale)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, n, low, high):
        return keras.random.uniform((n,), minval=low, maxval=high, seed=self.seed_generator)

    def _crop_and_flip(self, images):
        n = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        area = self._uniform(n, *self.crop_scale)
        log_ratio = self._uniform(n, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]))
        ratio = ops.exp(log_ratio)
        # fractions of the width and height the crop covers, at most the whole image
        crop_w = ops.minimum(ops.sqrt(area * ratio), 1.0)
        crop_h = ops.minimum(ops.sqrt(area / ratio), 1.0)
        left = self._uniform(n, 0.0, 1.0) * (1.0 - crop_w) * width
        top = self._uniform(n, 0.0, 1.0) * (1.0 - crop_h) * height
        scale_x, scale_y = crop_w, crop_h  # input pixels per output pixel
        # output pixel (x, y) reads input (x0 + (x + 0.5) * sx - 0.5, y0 + (y + 0.5) * sy - 0.5);
        # a flip reads x from the crop's right edge instead
        offset_x = left + 0.5 * scale_x - 0.5
        if self.horizontal_flip:
            flip = ops.cast(self._uniform(n, 0.0, 1.0) < 0.5, images.dtype)
            offset_x = offset_x + flip * (width - 1) * scale_x
            scale_x = scale_x * (1.0 - 2.0 * flip)
        offset_y = top + 0.5 * scale_y - 0.5
        zeros = ops.zeros_like(scale_x)
        transform = ops.stack([scale_x, zeros, offset_x, zeros, scale_y, offset_y, zeros, zeros], axis=1)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="nearest")

    def _per_image(self, n, low, high, images):
        return ops.reshape(self._uniform(n, low, high), (-1, 1, 1, 1))

    def call(self, images):
        n = ops.shape(images)[0]
        views = self._crop_and_flip(images)
        if self.brightness:
            views = views + self._per_image(n, -self.brightness, self.brightness, views)
        if self.contrast:
            mean = ops.mean(views, axis=(1, 2, 3), keepdims=True)
            views = (views - mean) * self._per_image(n, 1 - self.contrast, 1 + self.contrast, views) + mean
        if views.shape[-1] == 3 and (self.saturation or self.grayscale):
            gray = ops.sum(views * ops.convert_to_tensor(_LUMA, views.dtype), axis=-1, keepdims=True)
            if self.saturation:
                factor = self._per_image(n, 1 - self.saturation, 1 + self.saturation, views)
                views = gray + (views - gray) * factor
                gray = ops.sum(views * ops.convert_to_tensor(_LUMA, views.dtype), axis=-1, keepdims=True)
            if self.grayscale:
                to_gray = ops.cast(self._per_image(n, 0.0, 1.0, views) < self.grayscale, views.dtype)
                views = views + to_gray * (gray - views)
        return views

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "crop_scale": self.crop_scale,
            "crop_ratio": self.crop_ratio,
            "horizontal_flip": self.horizontal_flip,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "grayscale": self.grayscale,
            "seed": self.seed,
        }
