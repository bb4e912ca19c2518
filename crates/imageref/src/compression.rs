//! How an image's layers are compressed: one value the planner (`layer-compression` in
//! kpack.toml) and the executors (the layer writer) share.

/// The compression of layer blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`, which every runtime reads.
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

impl LayerCompression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The file name extension of a layer blob compressed this way.
    pub fn extension(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "tar.gz",
            LayerCompression::Zstd => "tar.zst",
        }
    }

    /// The compression of a layer blob named with [`extension`](Self::extension).
    pub fn of_file_name(name: &str) -> LayerCompression {
        if name.ends_with(".tar.zst") {
            LayerCompression::Zstd
        } else {
            LayerCompression::Gzip
        }
    }
}
