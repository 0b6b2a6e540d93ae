import { reactive, ref, shallowRef } from 'vue'
import { isEnabled } from '@/utils/format'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import {
  createProvider,
  deleteProvider,
  listProviderModels,
  listProviders,
  setProviderModelStatus,
  syncProvider,
  testProvider,
  updateProvider,
} from '@/api/providers'
import type { Provider, ProviderInput, ProviderKind, ProviderModel } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { t } from '@/locales'

const DEFAULT_URLS: Record<ProviderKind, string> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com',
  ollama: 'http://127.0.0.1:11434',
  local: 'local://',
}

interface ProviderForm {
  id: string
  name: string
  kind: ProviderKind
  api_url: string
  api_key: string
  description: string
  icon_url: string
  status: boolean
}

export function useProviders() {
  const list = usePagedList((q) => listProviders(q))

  // create / edit
  const dialogOpen = ref(false)
  const editing = ref<Provider | null>(null)
  const saving = ref(false)
  const form = reactive<ProviderForm>(emptyForm())
  const errors = useFieldErrors()

  function emptyForm(): ProviderForm {
    return {
      id: '',
      name: '',
      kind: 'openai',
      api_url: DEFAULT_URLS.openai,
      api_key: '',
      description: '',
      icon_url: '',
      status: true,
    }
  }

  function openCreate(): void {
    editing.value = null
    Object.assign(form, emptyForm())
    errors.clear()
    dialogOpen.value = true
  }

  function openEdit(p: Provider): void {
    editing.value = p
    Object.assign(form, {
      id: p.id,
      name: p.name,
      kind: p.kind,
      api_url: p.api_url,
      api_key: '',
      description: p.description ?? '',
      icon_url: p.icon_url ?? '',
      status: isEnabled(p.status),
    })
    errors.clear()
    dialogOpen.value = true
  }

  /** Switching kind proposes that kind's usual URL unless the user typed their own. */
  function onKindChange(kind: ProviderKind): void {
    if (!form.api_url || Object.values(DEFAULT_URLS).includes(form.api_url)) form.api_url = DEFAULT_URLS[kind]
  }

  async function save(): Promise<void> {
    errors.clear()
    saving.value = true
    const body: ProviderInput = {
      name: form.name.trim(),
      kind: form.kind,
      api_url: form.api_url.trim(),
      description: form.description.trim() || undefined,
      icon_url: form.icon_url.trim() || undefined,
      status: form.status ? 1 : 0,
    }
    // An empty key field means "keep the stored key".
    if (form.api_key) body.api_key = form.api_key
    try {
      if (editing.value) {
        await updateProvider(editing.value.id, body)
      } else {
        if (form.id.trim()) body.id = form.id.trim()
        await createProvider(body)
      }
      ElMessage.success(t('common.saved'))
      dialogOpen.value = false
      await list.load()
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  async function toggleStatus(p: Provider): Promise<void> {
    try {
      await updateProvider(p.id, { status: isEnabled(p.status) ? 0 : 1 })
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
    await list.load()
  }

  async function remove(p: Provider): Promise<void> {
    const ok = await ElMessageBox.confirm(t('providers.confirmDelete', { name: p.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteProvider(p.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  // test connection / sync: results stay next to the row
  const testing = ref<string | null>(null)
  const syncing = ref<string | null>(null)
  const testResults = reactive<Record<string, { ok: boolean; text: string }>>({})
  const syncResults = reactive<Record<string, string>>({})

  async function test(p: Provider): Promise<void> {
    testing.value = p.id
    try {
      const r = await testProvider(p.id)
      const text = r.ok
        ? t('providers.testOk', { ms: r.latency_ms, models: r.models_seen ?? '—' })
        : t('providers.testFailed', { ms: r.latency_ms, error: r.error ?? '' })
      testResults[p.id] = { ok: r.ok, text }
      if (r.ok) ElMessage.success(text)
      else ElMessage.error(text)
    } catch (err) {
      testResults[p.id] = { ok: false, text: errorMessage(err) }
      ElMessage.error(errorMessage(err))
    } finally {
      testing.value = null
    }
  }

  async function sync(p: Provider): Promise<void> {
    syncing.value = p.id
    try {
      const r = await syncProvider(p.id)
      const text = t('providers.syncResult', r as unknown as Record<string, number>)
      syncResults[p.id] = text
      ElMessage.success(text)
      if (modelsProvider.value?.id === p.id) await loadModels()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    } finally {
      syncing.value = null
    }
  }

  // models of one provider
  const modelsOpen = ref(false)
  const modelsProvider = ref<Provider | null>(null)
  const models = shallowRef<ProviderModel[]>([])
  const modelsTotal = ref(0)
  const modelsQuery = reactive({ page: 1, page_size: 50, q: '' })
  const modelsLoading = ref(false)
  const modelsError = ref<string | null>(null)
  const modelBusy = ref<string | null>(null)

  async function openModels(p: Provider): Promise<void> {
    modelsProvider.value = p
    modelsQuery.page = 1
    modelsQuery.q = ''
    models.value = []
    modelsOpen.value = true
    await loadModels()
  }

  async function loadModels(): Promise<void> {
    if (!modelsProvider.value) return
    modelsLoading.value = true
    modelsError.value = null
    try {
      const page = await listProviderModels(modelsProvider.value.id, { ...modelsQuery })
      models.value = page.items
      modelsTotal.value = page.total
    } catch (err) {
      modelsError.value = errorMessage(err)
    } finally {
      modelsLoading.value = false
    }
  }

  async function toggleModel(m: ProviderModel): Promise<void> {
    if (!modelsProvider.value) return
    modelBusy.value = m.id
    try {
      const updated = await setProviderModelStatus(modelsProvider.value.id, m.model_id, isEnabled(m.status) ? 0 : 1)
      models.value = models.value.map((x) => (x.id === m.id ? { ...x, ...updated } : x))
    } catch (err) {
      ElMessage.error(errorMessage(err))
      await loadModels()
    } finally {
      modelBusy.value = null
    }
  }

  return {
    ...list,
    kinds: Object.keys(DEFAULT_URLS) as ProviderKind[],
    dialogOpen,
    editing,
    saving,
    form,
    fieldErrors: errors.fieldErrors,
    openCreate,
    openEdit,
    onKindChange,
    save,
    toggleStatus,
    remove,
    testing,
    syncing,
    testResults,
    syncResults,
    test,
    sync,
    modelsOpen,
    modelsProvider,
    models,
    modelsTotal,
    modelsQuery,
    modelsLoading,
    modelsError,
    modelBusy,
    openModels,
    loadModels,
    toggleModel,
  }
}
