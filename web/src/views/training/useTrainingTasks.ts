import { computed, onBeforeUnmount, reactive, ref, shallowRef, watch } from 'vue'
import { useRouter } from 'vue-router'
import { ElMessage, ElMessageBox } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { listAllLocalModels } from '@/api/localModels'
import {
  cancelTrainingTask,
  createTrainingTask,
  deleteTrainingTask,
  listDatasetOptions,
  listTrainingConfigOptions,
  listTrainingTasks,
} from '@/api/trainingTasks'
import type { LocalModel, NamedOption, TrainingTask } from '@/api/types'
import { usePagedList } from '@/composables/usePagedList'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { t } from '@/locales'
import { isActive } from './taskEvents'

/** How often the list reloads while a task on it is pending or running. */
export const REFRESH_MS = 3000

/** The training tasks page: list with live-ish progress, cancel, delete, and the new-task form. */
export function useTrainingTasks() {
  const router = useRouter()
  const list = usePagedList(
    (q) => listTrainingTasks({ page: q.page, page_size: q.page_size, status: (q.status as string) || undefined }),
    {
      status: '',
    },
  )

  // Reload quietly while anything on the page may still move.
  let timer: ReturnType<typeof setTimeout> | null = null
  const anyActive = computed(() => list.items.value.some((x) => isActive(x.status)))
  function schedule(): void {
    if (timer) clearTimeout(timer)
    timer = null
    if (!anyActive.value) return
    timer = setTimeout(() => {
      timer = null
      void list.load()
    }, REFRESH_MS)
  }
  watch(list.items, schedule)
  onBeforeUnmount(() => {
    if (timer) clearTimeout(timer)
    timer = null
  })

  // new-task dialog
  const dialogOpen = ref(false)
  const saving = ref(false)
  const errors = useFieldErrors()
  const form = reactive<{ name: string; model_id: number | null; dataset_id: number | null; config_id: number | null }>({
    name: '',
    model_id: null,
    dataset_id: null,
    config_id: null,
  })
  const baseModels = shallowRef<LocalModel[]>([])
  const datasets = shallowRef<NamedOption[]>([])
  const configs = shallowRef<NamedOption[]>([])
  const pickersLoading = ref(false)
  const pickersError = ref<string | null>(null)

  async function loadPickers(): Promise<void> {
    pickersLoading.value = true
    pickersError.value = null
    const [m, d, c] = await Promise.allSettled([listAllLocalModels('base'), listDatasetOptions(), listTrainingConfigOptions()])
    const failures: string[] = []
    if (m.status === 'fulfilled') baseModels.value = m.value.filter((x) => x.status === 'ready' && x.is_available)
    else failures.push(errorMessage(m.reason))
    if (d.status === 'fulfilled') datasets.value = d.value
    else failures.push(errorMessage(d.reason))
    if (c.status === 'fulfilled') configs.value = c.value
    else failures.push(errorMessage(c.reason))
    pickersError.value = failures.length ? failures.join('; ') : null
    pickersLoading.value = false
    // One choice is no choice: preselect it.
    if (form.model_id === null && baseModels.value.length === 1) form.model_id = baseModels.value[0]!.id
    if (form.dataset_id === null && datasets.value.length === 1) form.dataset_id = datasets.value[0]!.id
    if (form.config_id === null && configs.value.length === 1) form.config_id = configs.value[0]!.id
  }

  function openCreate(): void {
    Object.assign(form, { name: '', model_id: null, dataset_id: null, config_id: null })
    errors.clear()
    dialogOpen.value = true
    void loadPickers()
  }

  const canSubmit = computed(
    () => form.name.trim() !== '' && form.model_id !== null && form.dataset_id !== null && form.config_id !== null,
  )

  async function create(): Promise<void> {
    if (!canSubmit.value) return
    errors.clear()
    saving.value = true
    try {
      const task = await createTrainingTask({
        name: form.name.trim(),
        model_id: form.model_id!,
        dataset_id: form.dataset_id!,
        config_id: form.config_id!,
      })
      ElMessage.success(t('trainingTasks.created'))
      dialogOpen.value = false
      await router.push({ name: 'training-task', params: { id: String(task.id) } })
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  async function cancel(task: TrainingTask): Promise<void> {
    const ok = await ElMessageBox.confirm(t('trainingTasks.confirmCancel', { name: task.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await cancelTrainingTask(task.id)
      ElMessage.success(t('trainingTasks.cancelRequested'))
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
    await list.load()
  }

  async function remove(task: TrainingTask): Promise<void> {
    const ok = await ElMessageBox.confirm(t('trainingTasks.confirmDelete', { name: task.name }), t('common.confirm'), {
      type: 'warning',
    }).catch(() => false)
    if (!ok) return
    try {
      await deleteTrainingTask(task.id)
      ElMessage.success(t('common.deleted'))
      await list.load()
    } catch (err) {
      ElMessage.error(errorMessage(err))
    }
  }

  return {
    ...list,
    anyActive,
    dialogOpen,
    saving,
    form,
    fieldErrors: errors.fieldErrors,
    baseModels,
    datasets,
    configs,
    pickersLoading,
    pickersError,
    canSubmit,
    openCreate,
    create,
    cancel,
    remove,
  }
}

/** Tag colour of a status. */
export function statusType(status: string): 'info' | 'primary' | 'success' | 'danger' | 'warning' {
  switch (status) {
    case 'running':
      return 'primary'
    case 'completed':
      return 'success'
    case 'failed':
      return 'danger'
    case 'cancelled':
      return 'warning'
    default:
      return 'info'
  }
}
