{
  "targets": [
    {
      "target_name": "libbpf_addon",
      "product_name": "libbpf_addon",
      "sources": ["libbpf_addon.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lcapstone", "-lelf", "-lz", "-lpthread"]
    }
  ]
}
