//! Decodes a few tokens: a fixed workload for instruction counts (valgrind --tool=callgrind).
use engine::{LoadOptions, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::PathBuf::from(std::env::args().nth(1).ok_or("usage: decode_count MODEL.gguf")?);
    let model = Model::load(&path, &LoadOptions::default())?;
    let mut cache = engine::KvCache::new();
    let mut next = vec![1u32];
    for _ in 0..8 {
        let logits = model.llama.forward_last(&next, &mut cache)?.to_vec1::<f32>()?;
        next = vec![engine::sampling::argmax(&logits)];
    }
    println!("{next:?}");
    Ok(())
}
