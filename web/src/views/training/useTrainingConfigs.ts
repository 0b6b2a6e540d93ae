import { reactive, ref, shallowRef } from 'vue'
import { ElMessage, ElMessageBox } from 'element-plus'
import { ApiError, errorMessage } from '@/api/errors'
import {
  createTrainingConfig,
  deleteTrainingConfig,
  listTrainingConfigs,
  listTrainingPresets,
  updateTrainingConfig,
  type TrainingConfig,
  type TrainingParams,
  type TrainingPreset,
} from '@/api/trainingConfigs'
import { usePagedList } from '@/composables/usePagedList'
import { t } from '@/locales'

/** The trainer's defaults, as the API fills them in (crates/server/src/training/params.rs). */
export const DEFAULT_PARAMS: TrainingParams = {
  learning_rate: 2e-4,
  epochs: 3,
  batch_size: 4,
  gradient_accumulation: 1,
  max_seq_length: 512,
  lora_r: 8,
  lora_alpha: 16,
  lora_dropout: 0,
  target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
  warmup_ratio: null,
  warmup_steps: 0,
  scheduler: 'cosine',
  weight_decay: 0,
  max_grad_norm: 1,
  seed: 42,
  rslora: false,
}

/** The ranges the API accepts; the inputs enforce them and the server's 422 has the last word. */
export const RANGES = {
  learning_rate: { min: 1e-7, max: 1, step: 1e-5 },
  epochs: { min: 1, max: 100, step: 1 },
  batch_size: { min: 1, max: 256, step: 1 },
  gradient_accumulation: { min: 1, max: 1024, step: 1 },
  max_seq_length: { min: 16, max: 32768, step: 64 },
  lora_r: { min: 1, max: 256, step: 1 },
  lora_alpha: { min: 0.5, max: 4096, step: 1 },
  lora_dropout: { min: 0, max: 0.99, step: 0.01 },
  warmup_ratio: { min: 0, max: 0.5, step: 0.01 },
  warmup_steps: { min: 0, max: 100000, step: 1 },
  weight_decay: { min: 0, max: 1, step: 0.01 },
  max_grad_norm: { min: 0, max: 1000, step: 0.1 },
  seed: { min: 0, max: Number.MAX_SAFE_INTEGER, step: 1 },
} as const

export type WarmupMode = 'steps' | 'ratio'

/** The form's state: the parameters plus which warm-up kind is being edited. */
export interface ParamsForm extends TrainingParams {
  warmup_mode: WarmupMode
  warmup_value: number
}

export function toForm(p: TrainingParams): ParamsForm {
  const mode: WarmupMode = p.warmup_steps === null && p.warmup_ratio !== null ? 'ratio' : 'steps'
  return {
    ...p,
    target_modules: [...p.target_modules],
    warmup_mode: mode,
    warmup_value: mode === 'ratio' ? (p.warmup_ratio ?? 0) : (p.warmup_steps ?? 0),
  }
}

/** The request body's `params`: warm-up as steps or a ratio, never both. */
export function fromForm(f: ParamsForm): Partial<TrainingParams> {
  const params: Partial<TrainingParams> = {
    learning_rate: f.learning_rate,
    epochs: f.epochs,
    batch_size: f.batch_size,
    gradient_accumulation: f.gradient_accumulation,
    max_seq_length: f.max_seq_length,
    lora_r: f.lora_r,
    lora_alpha: f.lora_alpha,
    lora_dropout: f.lora_dropout,
    target_modules: [...f.target_modules],
    scheduler: f.scheduler,
    weight_decay: f.weight_decay,
    max_grad_norm: f.max_grad_norm,
    seed: f.seed,
    rslora: f.rslora,
  }
  if (f.warmup_mode === 'ratio') params.warmup_ratio = f.warmup_value
  else params.warmup_steps = f.warmup_value
  return params
}

/** Problems the form can see before asking the server. */
export function localErrors(name: string, f: ParamsForm): Record<string, string> {
  const errors: Record<string, string> = {}
  if (!name.trim()) errors.name = t('trainingConfigs.nameRequired')
  if (!f.target_modules.length) errors['params.target_modules'] = t('trainingConfigs.targetsRequired')
  if (!(f.learning_rate > 0 && f.learning_rate <= 1)) errors['params.learning_rate'] = t('trainingConfigs.lrRange')
  return errors
}

/** The training configs page: list, create/edit with presets and field errors, delete. */
export function useTrainingConfigs() {
  const list = usePagedList((q) => listTrainingConfigs(q))
  const presets = shallowRef<TrainingPreset[]>([])

  const dialogOpen = ref(false)
  const editing = shallowRef<TrainingConfig | null>(null)
  const saving = ref(false)
  const name = ref('')
  const form = reactive<ParamsForm>(toForm(DEFAULT_PARAMS))
  const fieldErrors = ref<Record<string, string>>({})
  const preset = ref<string | null>(null)

  async function loadPresets(): Promise<void> {
    try {
      presets.value = await listTrainingPresets()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  function applyPreset(id: string): void {
    const p = presets.value.find((x) => x.id === id)
    if (!p) return
    preset.value = id
    Object.assign(form, toForm(p.params))
    fieldErrors.value = {}
  }

  function openCreate(): void {
    editing.value = null
    name.value = ''
    preset.value = null
    Object.assign(form, toForm(DEFAULT_PARAMS))
    fieldErrors.value = {}
    dialogOpen.value = true
    if (!presets.value.length) void loadPresets()
  }

  function openEdit(c: TrainingConfig): void {
    editing.value = c
    name.value = c.name
    preset.value = null
    Object.assign(form, toForm(c.params))
    fieldErrors.value = {}
    dialogOpen.value = true
    if (!presets.value.length) void loadPresets()
  }

  async function save(): Promise<void> {
    fieldErrors.value = localErrors(name.value, form)
    if (Object.keys(fieldErrors.value).length) return
    saving.value = true
    const body = { name: name.value, params: fromForm(form) }
    try {
      if (editing.value) await updateTrainingConfig(editing.value.id, body)
      else await createTrainingConfig(body)
      ElMessage.success(t('common.saved'))
      dialogOpen.value = false
      await list.load()
    } catch (err) {
      if (err instanceof ApiError && Object.keys(err.fields).length) {
        fieldErrors.value = { ...err.fields }
        ElMessage.error(err.message)
      } else {
        ElMessage.error(errorMessage(err))
      }
    } finally {
      saving.value = false
    }
  }

  async function remove(c: TrainingConfig): Promise<void> {
    const ok = await ElMessageBox.confirm(t('trainingConfigs.confirmDelete', { name: c.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteTrainingConfig(c.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(err instanceof ApiError && err.code === 'config_in_use' ? t('trainingConfigs.inUse') : errorMessage(err))
    }
  }

  /** The error for a parameter field (`params.lora_r`). */
  const paramError = (field: string) => fieldErrors.value[`params.${field}`]

  return {
    ...list,
    presets,
    dialogOpen,
    editing,
    saving,
    name,
    form,
    fieldErrors,
    preset,
    ranges: RANGES,
    loadPresets,
    applyPreset,
    openCreate,
    openEdit,
    save,
    remove,
    paramError,
  }
}
