import { computed, reactive, ref, shallowRef } from 'vue'
import { useRouter } from 'vue-router'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import {
  createLocalModel,
  deleteLocalModel,
  listAllLocalModels,
  listLocalModels,
  scanLocalModels,
  updateLocalModel,
} from '@/api/localModels'
import type { LocalModel, LocalModelInput, LocalModelType, ModelScanReport } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { useAuthStore } from '@/stores/auth'
import { t } from '@/locales'
import { baseIdOf, chatWithModel, compareWithBase, parametersSummary } from './localModelActions'

/** The models registry page: list by type, register and scan (admins), rename, enable, remove, chat. */
export function useLocalModels() {
  const auth = useAuthStore()
  const router = useRouter()
  const list = usePagedList(
    (q) => listLocalModels({ page: q.page, page_size: q.page_size, model_type: q.model_type as LocalModelType | '' }),
    {
      model_type: '',
    },
  )

  /** Every base model, to name an adapter's base and to pick one when registering an adapter. */
  const bases = shallowRef<LocalModel[]>([])
  async function loadBases(): Promise<void> {
    try {
      bases.value = await listAllLocalModels('base')
    } catch {
      bases.value = []
    }
  }
  const baseName = (m: LocalModel): string | null => {
    const id = baseIdOf(m)
    if (id === null) return null
    const b = bases.value.find((x) => x.id === id)
    return b ? b.display_name || b.name : `#${id}`
  }
  const summary = (m: LocalModel) => parametersSummary(m, m.model_type === 'lora' ? baseName(m) : null)

  const canEdit = (m: LocalModel) => auth.isAdmin || (m.created_by !== null && m.created_by === auth.user?.id)
  const canChat = (m: LocalModel) => m.status === 'ready' && m.is_available

  async function loadAll(): Promise<void> {
    await Promise.all([list.load(), loadBases()])
  }

  // register dialog (admins)
  const dialogOpen = ref(false)
  const saving = ref(false)
  const errors = useFieldErrors()
  const form = reactive<{
    name: string
    display_name: string
    model_path: string
    model_type: LocalModelType
    base_model_id: number | null
    description: string
  }>(emptyForm())
  function emptyForm() {
    return {
      name: '',
      display_name: '',
      model_path: '',
      model_type: 'base' as LocalModelType,
      base_model_id: null,
      description: '',
    }
  }
  function openRegister(): void {
    Object.assign(form, emptyForm())
    errors.clear()
    dialogOpen.value = true
    void loadBases()
  }
  async function register(): Promise<void> {
    errors.clear()
    saving.value = true
    const body: LocalModelInput = {
      name: form.name.trim(),
      model_path: form.model_path.trim(),
      model_type: form.model_type,
      ...(form.display_name.trim() ? { display_name: form.display_name.trim() } : {}),
      ...(form.description.trim() ? { description: form.description.trim() } : {}),
      ...(form.model_type === 'lora' && form.base_model_id !== null ? { base_model_id: form.base_model_id } : {}),
    }
    try {
      await createLocalModel(body)
      ElMessage.success(t('localModels.registered'))
      dialogOpen.value = false
      await loadAll()
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  // scan (admins)
  const scanning = ref(false)
  const scanReport = ref<ModelScanReport | null>(null)
  async function scan(): Promise<void> {
    scanning.value = true
    try {
      scanReport.value = await scanLocalModels()
      await loadAll()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    } finally {
      scanning.value = false
    }
  }

  async function rename(m: LocalModel): Promise<void> {
    const answer = await ElMessageBox.prompt(t('localModels.renamePrompt'), t('localModels.rename'), {
      inputValue: m.display_name,
      inputValidator: (v: string) => v.trim() !== '' || t('localModels.nameRequired'),
    }).catch(() => null)
    if (!answer) return
    try {
      await updateLocalModel(m.id, { display_name: answer.value.trim() })
      ElMessage.success(t('common.saved'))
      await list.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  async function toggleAvailable(m: LocalModel): Promise<void> {
    try {
      await updateLocalModel(m.id, { is_available: !m.is_available })
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
    await list.load()
  }

  async function remove(m: LocalModel): Promise<void> {
    const ok = await ElMessageBox.confirm(
      t('localModels.confirmDelete', { name: m.display_name || m.name }),
      t('common.confirm'),
      {
        type: 'warning',
      },
    ).catch(() => false)
    if (!ok) return
    try {
      await deleteLocalModel(m.id)
      ElMessage.success(t('common.deleted'))
      await loadAll()
    } catch (err) {
      // 409 model_in_use: the server says which adapters or tasks hold it.
      ElMessage.error({ message: errorMessage(err), duration: 6000 })
    }
  }

  const busy = ref<number | null>(null)
  async function chat(m: LocalModel): Promise<void> {
    busy.value = m.id
    try {
      await chatWithModel(router, m.id)
    } finally {
      busy.value = null
    }
  }
  async function compare(m: LocalModel): Promise<void> {
    busy.value = m.id
    try {
      await compareWithBase(router, m.id, baseIdOf(m))
    } finally {
      busy.value = null
    }
  }

  const readyBases = computed(() => bases.value.filter((b) => b.status === 'ready'))

  return {
    ...list,
    isAdmin: computed(() => auth.isAdmin),
    bases,
    readyBases,
    summary,
    baseName,
    canEdit,
    canChat,
    loadAll,
    dialogOpen,
    saving,
    form,
    fieldErrors: errors.fieldErrors,
    openRegister,
    register,
    scanning,
    scanReport,
    scan,
    rename,
    toggleAvailable,
    remove,
    busy,
    chat,
    compare,
  }
}
