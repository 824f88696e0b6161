# Candidate fast presets, one process each (run on a GPU machine: see BENCHMARKS.md).
A=${ATTACKS:-lsp,classwise_noise,ops,autoregressive}
run() { python3 benchmarks/preset_sweep.py "$1" "$2" "$A" > $OUT/$1.log 2>&1 & }
run none '{}'
run fast_a '{"width":16,"latent_dim":64,"epochs":12,"batch_size":64}'
run fast_b '{"width":16,"latent_dim":64,"epochs":20,"batch_size":128}'
run fast_c '{"width":8,"latent_dim":32,"epochs":20,"batch_size":64}'
run fast_d '{"width":16,"latent_dim":64,"epochs":8,"batch_size":32}'
run fast_e '{"width":32,"latent_dim":128,"epochs":8,"batch_size":128}'
run fast_f '{"width":8,"latent_dim":32,"epochs":10,"batch_size":32}'
run paper20 '{"width":64,"latent_dim":256,"epochs":20,"batch_size":128}'
wait
