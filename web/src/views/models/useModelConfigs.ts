import { computed, reactive, ref, shallowRef } from 'vue'
import { isEnabled } from '@/utils/format'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { createModelConfig, deleteModelConfig, listModelConfigs, updateModelConfig } from '@/api/modelConfigs'
import { listAllProviderModels, listAllProviders } from '@/api/providers'
import type { ModelConfig, ModelConfigInput, Provider, ProviderModel } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { t } from '@/locales'

/** The ranges the API accepts (R-PROV-4); the form enforces them and the server's 422 has the last word. */
export const PARAM_RANGES = {
  temperature: { min: 0, max: 2, step: 0.05, default: 0.7 },
  top_p: { min: 0, max: 1, step: 0.01, default: 0.9 },
  max_tokens: { min: 1, max: 1_000_000, step: 1, default: 8192 },
  top_k: { min: 0, max: 1000, step: 1, default: 0 },
} as const

export function useModelConfigs() {
  const list = usePagedList((q) => listModelConfigs(q))

  const providers = shallowRef<Provider[]>([])
  const providersError = ref<string | null>(null)
  const providerModels = shallowRef<ProviderModel[]>([])
  const modelsLoading = ref(false)

  const dialogOpen = ref(false)
  const editing = ref<ModelConfig | null>(null)
  const saving = ref(false)
  const errors = useFieldErrors()
  const form = reactive<ModelConfigInput & { enabled: boolean }>(emptyForm())

  function emptyForm(): ModelConfigInput & { enabled: boolean } {
    return {
      provider_id: '',
      model_id: '',
      model_name: '',
      type: 'text',
      temperature: PARAM_RANGES.temperature.default,
      max_tokens: PARAM_RANGES.max_tokens.default,
      top_p: PARAM_RANGES.top_p.default,
      top_k: PARAM_RANGES.top_k.default,
      status: 1,
      enabled: true,
    }
  }

  const enabledProviders = computed(() => providers.value.filter((p) => isEnabled(p.status)))
  const enabledModels = computed(() => providerModels.value.filter((m) => isEnabled(m.status)))

  async function loadProviders(): Promise<void> {
    providersError.value = null
    try {
      providers.value = await listAllProviders()
    } catch (err) {
      providersError.value = errorMessage(err)
    }
  }

  async function loadModelsFor(providerId: string): Promise<void> {
    providerModels.value = []
    if (!providerId) return
    modelsLoading.value = true
    try {
      providerModels.value = await listAllProviderModels(providerId)
    } catch (err) {
      ElMessage.error(errorMessage(err))
    } finally {
      modelsLoading.value = false
    }
  }

  async function onProviderChange(id: string): Promise<void> {
    form.model_id = ''
    form.model_name = ''
    await loadModelsFor(id)
  }

  function onModelChange(modelId: string): void {
    const m = providerModels.value.find((x) => x.model_id === modelId)
    form.model_name = m?.model_name ?? modelId
    form.type = m?.is_vision ? 'vision' : 'text'
  }

  async function openCreate(): Promise<void> {
    editing.value = null
    Object.assign(form, emptyForm())
    errors.clear()
    dialogOpen.value = true
    if (!providers.value.length) await loadProviders()
    const first = enabledProviders.value[0]
    if (first) {
      form.provider_id = first.id
      await loadModelsFor(first.id)
    }
  }

  async function openEdit(c: ModelConfig): Promise<void> {
    editing.value = c
    Object.assign(form, {
      provider_id: c.provider_id,
      model_id: c.model_id,
      model_name: c.model_name,
      type: c.type || 'text',
      temperature: c.temperature,
      max_tokens: c.max_tokens,
      top_p: c.top_p,
      top_k: c.top_k,
      status: c.status,
      enabled: isEnabled(c.status),
    })
    errors.clear()
    dialogOpen.value = true
    if (!providers.value.length) await loadProviders()
    await loadModelsFor(c.provider_id)
  }

  async function save(): Promise<void> {
    errors.clear()
    saving.value = true
    const body: ModelConfigInput = {
      provider_id: form.provider_id,
      model_id: form.model_id,
      model_name: form.model_name || undefined,
      type: form.type,
      temperature: form.temperature,
      max_tokens: form.max_tokens,
      top_p: form.top_p,
      top_k: form.top_k,
      status: form.enabled ? 1 : 0,
    }
    try {
      if (editing.value) await updateModelConfig(editing.value.id, body)
      else await createModelConfig(body)
      ElMessage.success(t('common.saved'))
      dialogOpen.value = false
      await list.load()
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  async function toggleStatus(c: ModelConfig): Promise<void> {
    try {
      await updateModelConfig(c.id, { status: isEnabled(c.status) ? 0 : 1 })
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
    await list.load()
  }

  async function remove(c: ModelConfig): Promise<void> {
    const ok = await ElMessageBox.confirm(t('modelConfigs.confirmDelete', { name: c.model_name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteModelConfig(c.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  const providerName = (id: string) => providers.value.find((p) => p.id === id)?.name ?? id

  return {
    ...list,
    ranges: PARAM_RANGES,
    providers,
    providersError,
    enabledProviders,
    enabledModels,
    modelsLoading,
    dialogOpen,
    editing,
    saving,
    form,
    fieldErrors: errors.fieldErrors,
    loadProviders,
    onProviderChange,
    onModelChange,
    openCreate,
    openEdit,
    save,
    toggleStatus,
    remove,
    providerName,
  }
}
