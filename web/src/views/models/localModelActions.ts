import type { Router } from 'vue-router'
import { ElMessage } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { configForLocalModel, getLocalModel } from '@/api/localModels'
import type { LocalModel } from '@/api/types'

/** One line about a registry model: layers and context of a base, rank, alpha and targets of an adapter. */
export function parametersSummary(m: Pick<LocalModel, 'model_type' | 'parameters'>, baseName?: string | null): string {
  const p = m.parameters ?? {}
  const parts: string[] = []
  const val = (k: string) => (p[k] === undefined || p[k] === null || p[k] === '' ? null : p[k])
  if (m.model_type === 'lora') {
    if (val('r') !== null) parts.push(`r=${String(p.r)}`)
    if (val('lora_alpha') !== null) parts.push(`alpha=${String(p.lora_alpha)}`)
    const targets = p.target_modules
    if (Array.isArray(targets) && targets.length) parts.push(targets.join(','))
    if (baseName) parts.push(`← ${baseName}`)
  } else {
    if (val('architecture') !== null) parts.push(String(p.architecture))
    if (val('num_layers') !== null) parts.push(`${String(p.num_layers)} layers`)
    if (val('context_length') !== null) parts.push(`ctx ${String(p.context_length)}`)
    if (val('hidden_size') !== null) parts.push(`d=${String(p.hidden_size)}`)
  }
  return parts.join(' · ')
}

/** The base an adapter was trained on: `base_model_id` of the row or of its parameters. */
export function baseIdOf(m: Pick<LocalModel, 'base_model_id' | 'parameters'>): number | null {
  if (typeof m.base_model_id === 'number') return m.base_model_id
  const p = m.parameters?.base_model_id
  return typeof p === 'number' ? p : null
}

/** Opens the playground with the caller's config for this model preselected. */
export async function chatWithModel(router: Router, modelId: number): Promise<boolean> {
  try {
    const config = await configForLocalModel(modelId)
    await router.push({ name: 'playground', query: { config: config.id } })
    return true
  } catch (err) {
    ElMessage.error(errorMessage(err))
    return false
  }
}

/** Opens the comparison page with the adapter and its base preselected (configs made on demand). */
export async function compareWithBase(router: Router, adapterId: number, baseId?: number | null): Promise<boolean> {
  try {
    let base = baseId ?? null
    if (base === null) base = baseIdOf(await getLocalModel(adapterId))
    if (base === null) throw new Error('This adapter names no base model')
    const [b, a] = await Promise.all([configForLocalModel(base), configForLocalModel(adapterId)])
    await router.push({ name: 'comparison', query: { configs: `${b.id},${a.id}` } })
    return true
  } catch (err) {
    ElMessage.error(errorMessage(err))
    return false
  }
}
