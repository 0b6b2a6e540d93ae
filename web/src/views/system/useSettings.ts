import { reactive, ref } from 'vue'
import { ElMessage } from 'element-plus'
import { errorMessage } from '@/api/errors'
import { getSettings, updateSettings } from '@/api/settings'
import type { AdminSettings } from '@/api/types'
import { useFieldErrors } from '@/composables/useFieldErrors'
import { t } from '@/locales'

export function useSettings() {
  const loading = ref(false)
  const saving = ref(false)
  const error = ref<string | null>(null)
  const loaded = ref(false)
  const form = reactive({
    registration_open: false,
    allow_private_provider_urls: false,
    swanlab: { mode: 'disabled', project: '', workspace: '', api_key: '', api_key_masked: '' },
  })
  const errors = useFieldErrors()

  function fill(s: AdminSettings): void {
    form.registration_open = s.registration_open
    form.allow_private_provider_urls = s.allow_private_provider_urls
    form.swanlab.mode = s.swanlab?.mode ?? 'disabled'
    form.swanlab.project = s.swanlab?.project ?? ''
    form.swanlab.workspace = s.swanlab?.workspace ?? ''
    form.swanlab.api_key = ''
    form.swanlab.api_key_masked = s.swanlab?.api_key_masked ?? ''
  }

  async function load(): Promise<void> {
    loading.value = true
    error.value = null
    try {
      fill(await getSettings())
      loaded.value = true
    } catch (err) {
      error.value = errorMessage(err)
    } finally {
      loading.value = false
    }
  }

  async function save(): Promise<void> {
    errors.clear()
    saving.value = true
    try {
      const swanlab: AdminSettings['swanlab'] = {
        mode: form.swanlab.mode,
        project: form.swanlab.project,
        workspace: form.swanlab.workspace,
      }
      // An empty key field keeps the stored key.
      if (form.swanlab.api_key) swanlab.api_key = form.swanlab.api_key
      fill(
        await updateSettings({
          registration_open: form.registration_open,
          allow_private_provider_urls: form.allow_private_provider_urls,
          swanlab,
        }),
      )
      ElMessage.success(t('common.saved'))
    } catch (err) {
      errors.report(err)
    } finally {
      saving.value = false
    }
  }

  return { loading, saving, error, loaded, form, fieldErrors: errors.fieldErrors, load, save }
}
